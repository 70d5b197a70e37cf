// Command-line flags as the command-line contract spells them (DESIGN.md section 7: --max-tokens,
// --data-dir) parsed by Abseil, which names them with underscores.
#pragma once

#include <string>
#include <vector>

namespace rsd {

// absl::ParseCommandLine after rewriting dashes to underscores in every `--flag-name` (up to an
// '='), with two additions Abseil's own handling lacks for our spelling:
// - `--help` / `-h` prints the usage message and this program's flags in the dashed spelling with
//   their defaults, then exits 0;
// - `--flagfile PATH` (or `=PATH`) reads flags from PATH, one per line, in either spelling (blank
//   lines and lines starting with '#' are skipped); an unreadable file exits 1 naming it.
// The returned positional arguments point into storage that lives for the process.
std::vector<char*> ParseDashedCommandLine(int argc, char** argv);

// The help text `--help` prints: one line per flag defined outside Abseil.
std::string DashedFlagHelp();

// Debian's Abseil is a debug build: absl::Mutex keeps a process-wide lock-order graph (deadlock
// detection, behind one global lock) on every lock, ours and gRPC's. Servers and benchmark clients
// call this first, before any thread starts. With RSD_MUTEX_DEADLOCK_CHECKS=1 (what the tests
// set for the servers they start) the checks stay: they report lock-order inversions.
void SkipMutexDeadlockChecks();

}  // namespace rsd
