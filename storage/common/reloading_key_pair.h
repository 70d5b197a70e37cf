// A TLS certificate and key read from files and read again when they change, for OpenSSL servers
// (the HTTP server's handshakes): Use() installs the current pair on a connection, first reloading
// it if either file's modification time or size changed. A pair that fails to load keeps the last
// good one in use (logged once per change).
//
// Thread-safe.
#pragma once

#include <openssl/ssl.h>
#include <sys/types.h>

#include <mutex>
#include <string>

#include "absl/status/status.h"

namespace rsd {

class ReloadingKeyPair {
 public:
  ReloadingKeyPair(std::string cert_path, std::string key_path);
  ~ReloadingKeyPair();
  ReloadingKeyPair(const ReloadingKeyPair&) = delete;
  ReloadingKeyPair& operator=(const ReloadingKeyPair&) = delete;

  // Installs the pair on `ssl` (reloading it first if the files changed). False if no pair has
  // ever loaded.
  bool Use(SSL* ssl);
  // The OpenSSL certificate callback: arg is a ReloadingKeyPair.
  static int CertCallback(SSL* ssl, void* arg);

 private:
  // Loads the files if their stamp changed; mu_ held.
  void RefreshLocked();
  absl::Status LoadLocked();

  const std::string cert_path_;
  const std::string key_path_;
  std::mutex mu_;
  std::string stamp_;  // modification times and sizes of both files at the last attempt
  X509* leaf_ = nullptr;
  STACK_OF(X509) * chain_ = nullptr;
  EVP_PKEY* key_ = nullptr;
};

}  // namespace rsd
