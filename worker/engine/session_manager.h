// Multi-turn sessions over the engine (DESIGN.md section 5) with their state tiers (section 4):
// the token log is the ground truth, committed to RocksDB (synced) after every turn; between
// turns a session can leave the hot pool whole, as residual or K/V checkpoint blocks (warm tier,
// overflowing to cold) or as nothing but its token log, and it comes back bit-identical.
// Not thread-safe: one compute thread drives it (like the engine).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/block_key.h"
#include "storage/cold_store.h"
#include "storage/common/ids.h"
#include "storage/host_memory.h"
#include "storage/session_state.h"
#include "storage/state_codec.h"
#include "storage/tier_chain.h"
#include "storage/warm_tier.h"
#include "worker/engine/engine.h"

namespace rsd {

// What a turn appends before it generates: earlier messages sent along with it (an OpenAI-style
// history for a new session; see ChatTemplate::Turn), then the user's message.
struct TurnInput {
  TurnInput() = default;
  // A turn of one user message, with no context (the common case, hence implicit).
  TurnInput(std::string text) : user_text(std::move(text)) {}  // NOLINT(runtime/explicit)
  TurnInput(const char* text) : user_text(text) {}             // NOLINT(runtime/explicit)
  std::vector<ChatMessage> context;
  std::string user_text;
  // Raw text (an OpenAI /v1/completions prompt): no chat template, special tokens not parsed,
  // BOS only at the session's start if the model wants one, nothing appended after the
  // generation. No context then.
  bool raw = false;
};

struct SessionManagerOptions {
  std::string data_dir;                     // "" : no cold tier (nothing persists)
  size_t warm_budget_bytes = 256ull << 20;  // host checkpoint budget (LRU, overflow to cold)
  ColdStoreOptions cold;                    // tests: fault-injecting file system
  // A session's first turn starts from K/V another resident session computed for the same
  // leading tokens (prefix_reuse.cc).
  bool prefix_reuse = true;
  // Reuse only this many prompt tokens or more (shorter prefixes, e.g. a chat template's opening,
  // cost about as much to copy as to compute).
  int64_t prefix_reuse_min_tokens = 32;
  // A session the router closes (a stateless request's included) leaves its leading hot chunks
  // as a donor for later first turns of its tenant: at most this many such prefixes, their blocks
  // shared where they are shared, dropped least recently used first, and before any session is
  // spilled for room (0: none kept).
  int prefix_cache_entries = 8;
};

struct TurnResult {
  uint32_t turn = 0;                 // its number: 1 for a session's first turn (as on the wire)
  std::vector<int32_t> turn_tokens;  // everything this turn appended to the log
  GenerateResult generation;
  std::string restored_from;         // "hot", "warm", "cold", "tokens" (re-prefill), "new"
  double restore_seconds = 0;
  // Prompt tokens whose state was copied from another session's instead of computed (prefix
  // reuse on a session's first turn; whole chunks).
  int64_t reused_tokens = 0;
  int64_t history_tokens = 0;        // the token log's size after the turn
  uint64_t seed = 0;                 // the sampling seed it ran with
};

struct SessionInfo {
  SessionId id;
  std::string name;
  uint32_t turns = 0;
  int64_t token_count = 0;
  bool resident = false;       // in the hot pool
  SpillForm spilled = SpillForm::kNone;
  SessionAttrs attrs;
  int32_t hot_blocks = 0;      // pool blocks held now
  int32_t shared_blocks = 0;   // of those, blocks other sessions hold too
  double idle_seconds = 0;     // since its last turn began or ended
};

// A turn between BeginTurn and CommitTurn / AbortTurn: the session's engine sequence (keyed by its
// id) is resident.
struct PendingTurn {
  SessionId id;
  uint32_t turn = 0;                 // its number: 1 for the session's first turn
  int64_t before = 0;                // the log's size before the turn (rollback point)
  std::vector<int32_t> user_tokens;  // the user message through the chat template
  bool raw = false;                  // TurnInput::raw: no end-of-turn tokens at commit
  std::string restored_from;         // "hot", "warm", "cold", "tokens", "new", "prefix"
  double restore_seconds = 0;
  // The first user_tokens whose state the session already holds, copied from another session
  // (prefix reuse): the caller feeds only the rest.
  int64_t reused_tokens = 0;
};

class SessionManager {
 public:
  // Opens the cold tier in options.data_dir (if any) and finds the sessions stored there.
  // FAILED_PRECONDITION / PERMISSION_DENIED naming the path for an unusable data dir.
  static absl::StatusOr<std::unique_ptr<SessionManager>> Create(Engine* engine,
                                                                SessionManagerOptions options);
  ~SessionManager();

  // The session named `name`, created (random id) if there is none.
  absl::StatusOr<SessionId> OpenOrCreate(const std::string& name);
  Engine& engine() { return *engine_; }
  // A session with a given id (a router mints ids); for an existing id, updates its attributes
  // (same tenant required: PERMISSION_DENIED otherwise).
  absl::Status Create(const SessionId& id, const SessionAttrs& attrs);
  absl::StatusOr<SessionInfo> Describe(const SessionId& id) const;
  std::vector<SessionInfo> List() const;
  bool Contains(const SessionId& id) const { return sessions_.count(id) != 0; }
  size_t session_count() const { return sessions_.size(); }
  // Deletes the session everywhere: hot pool, warm and cold tiers, token log. With `keep_prefix`
  // (a close the router asks for), its leading hot chunks stay as a donor for later first turns
  // of its tenant (prefix_cache_entries).
  absl::Status Close(const SessionId& id, bool keep_prefix = false);
  // Drops the least recently used kept prefix not in `busy`; false if there is none.
  bool DropCachedPrefix(const std::vector<SessionId>& busy = {});
  int cached_prefixes() const { return static_cast<int>(prefix_cache_.size()); }
  // Ids whose stored checkpoints belonged to no session at start (swept by Recover).
  int orphans_swept() const { return orphans_swept_; }

  // The phases of a turn, for the scheduler that batches many turns. BeginTurn checks the limits
  // (FAILED_PRECONDITION: no room left at all; INVALID_ARGUMENT with the numbers: history +
  // prompt + max_tokens over the context), restores the session to the hot pool if it was
  // spilled (RESOURCE_EXHAUSTED if the pool has no room: spill idle sessions and retry) and, with
  // `flush`, computes its pending tokens now (else they stay pending for the caller to feed).
  // The user tokens are not appended: the caller feeds them. CommitTurn appends the end-of-turn
  // tokens after `generated`, writes the turn to the token log with the session's metadata
  // (one synced write) and makes it part of the history; a turn that cannot be written is rolled
  // back. CommitTurns does so for turns of several sessions (those that end in the same step) in
  // one synced write for all of them (ColdStore::CommitTurns), one result per turn in order.
  // AbortTurn rolls the session back to the previous turn's end.
  // A context ChatTemplate::CheckContext refuses is INVALID_ARGUMENT.
  absl::Status CheckTurn(const SessionId& id, const TurnInput& input,
                         const GenerateParams& params) const;
  absl::StatusOr<PendingTurn> BeginTurn(const SessionId& id, const TurnInput& input,
                                        const GenerateParams& params, bool flush);
  absl::StatusOr<TurnResult> CommitTurn(const PendingTurn& turn, GenerateResult generated);
  struct TurnToCommit {
    const PendingTurn* turn;
    GenerateResult generated;
  };
  std::vector<absl::StatusOr<TurnResult>> CommitTurns(std::span<TurnToCommit> turns);
  absl::Status AbortTurn(const PendingTurn& turn);
  // Pool blocks a turn with these many new tokens needs at most, once its session is resident.
  int64_t BlocksForTurn(const SessionId& id, int64_t new_tokens) const;
  int32_t HotBlocks(const SessionId& id) const;
  int32_t Priority(const SessionId& id) const;
  // Tokens the input adds to the session's log before generation (chat template included).
  int64_t UserTurnTokens(const SessionId& id, const TurnInput& input) const;
  // Those tokens, for a session with `first_turn` (no turns yet).
  std::vector<int32_t> PromptTokens(const TurnInput& input, bool first_turn) const;
  // The session whose hot blocks a turn of `id` with `input` would start from (a first turn's
  // prompt, or a spilled session's restore), and how many (chunks == 0: none): admission needs no
  // room for them and must not spill the donor.
  struct PrefixDonor {
    SessionId id;
    int32_t chunks = 0;
    bool hot = true;  // its blocks are shared; false: its checkpoints are restored (it is spilled)
  };
  PrefixDonor PrefixDonorFor(const SessionId& id, const TurnInput& input) const;
  // Routing hints (prefix_keys.h). The keys of the leading whole chunks of a first turn with
  // `input` that reuse could start from (power-of-two chunk counts of at least
  // prefix_reuse_min_tokens tokens, each with its token count; none with reuse off). Uses only
  // the tokenizer and template: safe on any thread.
  struct PrefixKey {
    std::string key;
    int64_t tokens = 0;
  };
  std::vector<PrefixKey> PromptPrefixKeys(const std::string& tenant, const TurnInput& input) const;
  // The keys of the leading hot chunks of resident sessions at power-of-two chunk counts, most
  // recently used sessions first, at most `max_keys` distinct ones (what a donor could give).
  std::vector<std::string> PrefixSummary(size_t max_keys) const;
  // Deduplicated migration (issue #15): of the chain keys `keys` (the i-th names chunks 0..i of a
  // session's log, prefix_keys.h), how many leading ones some session of `tenant` other than
  // `except` holds here (in the pool or checkpointed) in a way that gives `plan`'s forms, i.e.
  // the chunks an importer need not be sent (the import compares the tokens themselves).
  int32_t HeldChunks(const std::string& tenant, const SessionId& except,
                     std::span<const std::string> keys, const LayerPlan& plan) const;
  // Makes room: drops a kept prefix of a closed session if one is not in `busy`, else spills the
  // resident session that matters least (unpinned before pinned, lower priority, least recently
  // used) among those not in `busy`; false if there is neither.
  absl::StatusOr<bool> SpillIdle(const std::vector<SessionId>& busy);
  // Idle sessions past their TTL spill to cold; past twice their TTL they are deleted. Returns
  // the ids deleted.
  std::vector<SessionId> ExpireIdle(const std::vector<SessionId>& busy);

  // Removes the last committed turn (regenerate): from the token log (synced) and the engine.
  // FAILED_PRECONDITION if the session has no turn.
  absl::Status Undo(const SessionId& id);
  // Moves the session out of the hot pool in `form` (kNone: no-op).
  absl::Status Spill(const SessionId& id, SpillForm form);
  // The session's state for another worker, in `form` (kAuto: the engine's per-layer plan; a
  // resident session spills in that form first, a spilled one is restored and re-spilled if its
  // form differs). The session stays here (spilled) until the caller closes it.
  absl::StatusOr<SessionState> ExportState(const SessionId& id, SpillForm form);
  // Takes a session from another worker. Chunks the state leaves out as shared come from a session
  // here with the same leading tokens (ABORTED if none holds them any more: the sender sends them);
  // a state without usable blocks starts from the leading chunks a session here holds, if any
  // (failover skips what is here). FAILED_PRECONDITION for another model fingerprint or
  // an existing copy at the same or a newer epoch; DATA_LOSS naming the block for a block that
  // fails its checksum or does not describe its place; with another numerics fingerprint or
  // block size the blocks are dropped and the session restores from its token log (the report
  // says so). Nothing is kept if the import fails.
  absl::StatusOr<ImportReport> ImportState(const SessionState& state);

  // Drops every checkpoint of the session (hot, warm, cold) after one failed to load: its next
  // turn rebuilds it from the token log, which is synced and checksummed. The corruption is logged.
  absl::Status ResetToTokens(const SessionId& id, const absl::Status& why);
  // Tests: the cold tier, to damage stored values.
  ColdStore* cold_for_test() { return cold_.get(); }

  // Sessions found at start whose stored metadata or token log could not be read (a damaged
  // RocksDB block, a record failing its checksum): not loaded, their keys deleted, reported to the
  // router (which rebuilds each from its journal) until one comes back by import. The worker
  // starts and serves every other session. Any thread.
  struct Quarantined {
    SessionId id;
    std::string tenant;  // from the metadata when it could be read ("" otherwise)
    uint64_t epoch = 0;  // likewise (0: unknown)
    std::string error;
  };
  std::vector<Quarantined> QuarantinedSessions() const;

  // Moves a spilled session's warm checkpoint blocks to the cold tier (tests: restore from cold).
  absl::Status DemoteToCold(const SessionId& id);

  // Bytes held per tier: warm (all sessions), cold (this session's stored blocks).
  size_t warm_bytes() const { return warm_->bytes_used(); }
  // Bytes of warm values held in pinned (device-copyable) memory.
  size_t warm_pinned_bytes() const { return warm_->allocator_bytes(); }
  absl::StatusOr<int64_t> ColdBytes(const SessionId& id);
  size_t WarmBytes(const SessionId& id) const;
  size_t warm_budget() const { return options_.warm_budget_bytes; }
  // The cold tier's distinct values and references (zeros without a data dir). Any thread.
  ColdStore::ContentStats cold_stats() const {
    return cold_ ? cold_->content_stats() : ColdStore::ContentStats{};
  }
  // Checkpoint payload and framing bytes of this session's stored blocks, per form, from the
  // stored values themselves (warm and cold), for honest reporting.
  struct StoredBytes {
    int64_t payload = 0, framing = 0, keys = 0, blocks = 0;
    int64_t tokens_covered = 0;  // tokens whose state the blocks hold
  };
  absl::StatusOr<StoredBytes> Stored(const SessionId& id);

  // Between-turn state moves of every session so far, for metrics, keyed "spill/<form>" (kv,
  // residual, auto, tokens), "restore/<source>" (warm, cold, tokens) and "reuse/prefix" (K/V
  // copied from another session for a first turn's prompt): how many, the checkpoint bytes
  // written, read or copied (4 a token for the token log), and the time. Any thread.
  struct MoveTotals {
    int64_t count = 0, bytes = 0;
    double seconds = 0;
  };
  std::map<std::string, MoveTotals> StateMoves() const;

 private:
  // What the manager keeps of a session besides its state, which the engine owns (its tokens,
  // hot blocks and checkpoints: the engine sequence with the session's id).
  struct Session {
    SessionId id;
    std::string name;
    std::vector<int64_t> turn_ends;  // the token log's size after each committed turn
    uint32_t turns() const { return static_cast<uint32_t>(turn_ends.size()); }
    int64_t committed() const { return turn_ends.empty() ? 0 : turn_ends.back(); }
    SpillForm spilled = SpillForm::kNone;  // how it last left the pool (kNone: resident)
    uint64_t last_used = 0;                // for choosing whom to spill when the pool is full
    double last_active = 0;                // steady-clock seconds (TTL)
    SessionAttrs attrs;
  };
  SessionManager(Engine* engine, SessionManagerOptions options)
      : engine_(engine), options_(std::move(options)) {}
  absl::Status Recover();
  // Before Recover (session_salvage.cc): a store in which some session cannot be read whole is
  // replaced by a copy of what can be read; the rest is quarantined. A store that reads whole
  // keeps what was read in read_at_start_, for Recover (each session is read once at start).
  absl::Status SalvageIfDamaged();
  // A stored session's metadata (NOT_FOUND: none) and token log, as read at start.
  struct StoredSession {
    absl::StatusOr<std::string> meta;
    std::vector<TokenRecord> log;
  };
  absl::Status CopySession(ColdStore& from, ColdStore& to, const SessionId& id, Quarantined* seen);
  static bool ReadsWhole(ColdStore& store, std::map<SessionId, StoredSession>* out);
  // Records `seen` as quarantined for `why` (logged, reported in the worker's status).
  void Quarantine(Quarantined seen, const absl::Status& why);
  // Recover's work for one stored session (`stored`: what was read of it at start, or null to read
  // it now); an error quarantines it.
  absl::Status RecoverOne(const SessionId& id, StoredSession* stored, Quarantined* seen);
  // A stored session's metadata into `s` (attributes) and, where its checkpoints fit this engine,
  // their chunk count and plan. DATA_LOSS if it is not a JSON object.
  absl::Status ApplyMeta(const std::string& meta, Session& s, int32_t* n_chunks,
                         LayerPlan* plan) const;
  absl::Status SaveMeta(const Session& s);
  // The metadata SaveMeta writes, for `s` with `turns` committed turns and spill form `spilled`.
  std::string MetaJson(const Session& s, uint32_t turns, SpillForm spilled) const;
  // ImportState's checkpoints of `s` into the tiers: the state's blocks (`use_blocks`) after the
  // shared chunks it left out, taken from a session here (ABORTED if none holds them any more);
  // without usable blocks, the leading chunks a session here holds (SeedFromHeld). Sets the
  // chunks checkpointed, their plan and the report's shared tokens.
  absl::Status StoreImportedCheckpoints(const Session& s, const SessionState& state,
                                        bool use_blocks, int32_t* n_chunks, LayerPlan* plan,
                                        ImportReport* report);
  // Prefix reuse (prefix_reuse.cc): the resident session holding the most whole leading chunks of
  // `prompt` in the hot pool (tokens compared) if session `s` may reuse them now (its first turn,
  // nothing computed yet, at least prefix_reuse_min_tokens), and the new session seeded with the
  // donor's blocks, shared; returns the tokens seeded (0: the share failed and the turn prefills).
  PrefixDonor ReusablePrefix(const Session& s, std::span<const int32_t> prompt) const;
  // The session of `tenant` other than `except` holding the most whole leading chunks of `tokens`
  // (at most max_chunks; tokens compared) in the pool or as checkpoints; only resident ones with
  // `hot_only`, only ones that can give `forms`' layer forms with `forms`
  // (Engine::GivesPrefixIn).
  PrefixDonor LongestHeldPrefix(const std::string& tenant, std::span<const int32_t> tokens,
                                int32_t max_chunks, const SessionId& except, bool hot_only = false,
                                const LayerPlan* forms = nullptr) const;
  // For restoring spilled session `s`: the resident session whose hot blocks hold the most of its
  // leading checkpointed chunks (at least prefix_reuse_min_tokens; chunks 0: none).
  PrefixDonor HotDonorFor(const Session& s) const;
  // For session `id` about to be adopted: checkpoints of its first donor.chunks chunks of `tokens`
  // in `plan`'s forms, from `donor` (Engine::CopyPrefixCheckpoints); the bytes copied.
  absl::StatusOr<int64_t> TakeHeldChunks(const SessionId& id, const PrefixDonor& donor,
                                         std::span<const int32_t> tokens, const LayerPlan& plan);
  // An imported session with no usable blocks (failover's token log): the leading whole chunks of
  // `tokens` another session here holds, as its checkpoints (`plan` set to their forms); returns
  // how many (0: none, or taking them failed, logged: it rebuilds from the log as before).
  int32_t SeedFromHeld(const Session& s, std::span<const int32_t> tokens, LayerPlan* plan);
  std::string PrefixRoot(const std::string& tenant) const;  // the chain keys' root here
  // What can give its blocks: resident sessions and kept prefixes of closed ones; and what can give
  // its checkpoints: sessions spilled in a form that has them.
  struct Donor {
    SessionId id;
    std::string tenant;
    uint64_t last_used = 0;
    bool hot = true;  // resident (else spilled with checkpoints)
  };
  std::vector<Donor> Donors() const;
  int32_t LeadingHotChunks(const SessionId& id) const;  // whole chunks from the start, in the pool
  // The donor's leading whole chunks it can give: in the pool, or checkpointed if it is spilled.
  int32_t HeldChunksOf(const Donor& d) const;
  // Of a spilled session, the whole chunks from the start with checkpoints.
  int32_t LeadingCheckpointedChunks(const SessionId& id) const;
  // A closed session's leading hot chunks stay as a donor (its own engine sequence cut to them,
  // with their checkpoints, in prefix_cache_; false: not kept), at most prefix_cache_entries of
  // them, least recently used dropped first.
  struct CachedPrefix {
    SessionId id;
    std::string tenant;
    uint64_t last_used = 0;
  };
  bool KeepPrefixOf(const Session& s);
  void ForgetKeptPrefix(const SessionId& id);
  int64_t SeedFromPrefix(const SessionId& id, const PrefixDonor& donor,
                         std::span<const int32_t> prompt);
  absl::Status Restore(Session& s, std::string* restored_from);
  Session* Find(const SessionId& id);
  absl::Status NotFound(const SessionId& id) const;
  // The committed token log (the engine's tokens up to the last committed turn's end).
  std::vector<int32_t> Log(const Session& s) const;
  // Whether the session is spilled as checkpoints covering at least one chunk.
  bool HoldsCheckpoints(const Session& s) const;

  Engine* engine_;
  SessionManagerOptions options_;
  std::map<SessionId, StoredSession> read_at_start_;  // SalvageIfDamaged to Recover, then empty
  // The warm tier's memory: one region from the backend's host allocator (pinned on CUDA), carved
  // by an arena; declared before the tiers so it outlives them.
  struct WarmRegion {
    Backend* backend = nullptr;
    void* base = nullptr;
    WarmRegion() = default;
    WarmRegion(const WarmRegion&) = delete;
    WarmRegion& operator=(const WarmRegion&) = delete;
    ~WarmRegion() {
      if (base != nullptr) backend->FreeHost(base);
    }
  } warm_region_;
  std::unique_ptr<HostArena> warm_memory_;
  std::unique_ptr<ColdStore> cold_;
  // Warm over cold (when there is a data dir): overflow and demotion happen there.
  std::unique_ptr<TierChain> tiers_;
  WarmTier* warm_ = nullptr;  // tiers_'s top
  std::map<SessionId, Session> sessions_;
  std::vector<CachedPrefix> prefix_cache_;
  int orphans_swept_ = 0;
  void NoteMove(const std::string& key, int64_t bytes, double seconds);
  mutable std::mutex moves_mu_;
  mutable std::mutex quarantine_mu_;
  std::vector<Quarantined> quarantined_;     // guarded by quarantine_mu_
  std::map<std::string, MoveTotals> moves_;  // guarded by moves_mu_
  uint64_t clock_ = 0;
};

}  // namespace rsd
