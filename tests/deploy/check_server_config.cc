// Parses and validates server config files with the server's own parser
// (server/service/server_config.cc), so tests/deploy can prove that the configs shipped in
// deploy/ (the Kubernetes ConfigMap, ...) are accepted by attnscope-server, unknown keys and
// out-of-range values included. Prints one line per file; exit 1 if any is rejected.
#include <iostream>

#include "server/service/server_config.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: check_server_config FILE...\n";
    return 2;
  }
  int rejected = 0;
  for (int i = 1; i < argc; ++i) {
    auto config = attnscope::service::LoadServerConfig(argv[i]);
    if (!config.ok()) {
      std::cout << argv[i] << ": REJECTED: " << config.status().message() << "\n";
      ++rejected;
      continue;
    }
    std::cout << argv[i] << ": ok drain_grace_seconds=" << config->drain_grace_seconds
              << " listen=" << config->listen << "\n";
  }
  return rejected == 0 ? 0 : 1;
}
