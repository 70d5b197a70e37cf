// Where a server may listen without transport security (issue #13): the servers speak plaintext
// gRPC and HTTP, so by default they bind loopback only; a non-loopback address needs
// --insecure-listen, which says that anyone who can reach the port can use it.
#pragma once

#include <initializer_list>
#include <string_view>
#include <utility>

#include "absl/status/status.h"

namespace rsd {

// True for host:port addresses on the loopback interface: 127.0.0.0/8, "localhost", "[::1]"
// (also written ::1 or ipv6:[::1]). An empty host (":8080"), a wildcard (0.0.0.0, [::]) or any
// other name or address is not.
bool IsLoopbackAddress(std::string_view address);

// OK when `address` is loopback, or when `insecure` (--insecure-listen) allows plaintext on any
// address; otherwise INVALID_ARGUMENT naming `flag`, the address and how to allow it.
absl::Status CheckPlaintextListen(std::string_view flag, std::string_view address, bool insecure);

// CheckPlaintextListen of each (flag, address) a server was given (empty addresses: not served);
// with `insecure`, logs a warning for each one that is not loopback.
absl::Status CheckListenFlags(
    bool insecure, std::initializer_list<std::pair<std::string_view, std::string_view>> flags);

}  // namespace rsd
