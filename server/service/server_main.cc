// attnscope-server --config config/server.yaml [--model DIR] [--listen ADDR]
// Exits 0 after a SIGTERM/SIGINT drain, 1 when the config or the model cannot be loaded.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <iostream>
#include <string>
#include <thread>

#include "server/service/server.h"
#include "server/service/server_config.h"

namespace {

void Usage() {
  std::cerr << "usage: attnscope-server [--config FILE] [--model DIR] [--listen HOST:PORT]\n"
               "  --config  YAML config (every key documented in config/server.yaml)\n"
               "  --model   Hugging Face model folder (overrides model_dir)\n"
               "  --listen  address to listen on (overrides listen; default 127.0.0.1:50051)\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, model_dir, listen;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        std::cerr << "attnscope-server: " << arg << " needs a value\n";
        std::exit(2);
      }
      *out = argv[++i];
    };
    if (arg == "--config") {
      value(&config_path);
    } else if (arg == "--model") {
      value(&model_dir);
    } else if (arg == "--listen") {
      value(&listen);
    } else if (arg == "--help" || arg == "-h") {
      Usage();
      return 0;
    } else {
      std::cerr << "attnscope-server: unknown argument '" << arg << "'\n";
      Usage();
      return 2;
    }
  }

  attnscope::service::ServerConfig config;
  if (!config_path.empty()) {
    absl::StatusOr<attnscope::service::ServerConfig> loaded =
        attnscope::service::LoadServerConfig(config_path);
    if (!loaded.ok()) {
      std::cerr << "attnscope-server: " << loaded.status().message() << "\n";
      return 1;
    }
    config = *std::move(loaded);
  }
  if (!model_dir.empty()) config.model_dir = model_dir;
  if (!listen.empty()) config.listen = listen;
  absl::Status valid = attnscope::service::ValidateServerConfig(config);
  if (!valid.ok()) {
    std::cerr << "attnscope-server: " << valid.message() << "\n";
    return 1;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  // Signals are taken by one thread with sigwait; every other thread inherits the block.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<attnscope::service::AttnScopeServer>> server =
      attnscope::service::AttnScopeServer::Start(config);
  if (!server.ok()) {
    spdlog::error("cannot start: {}", std::string(server.status().message()));
    return 1;
  }
  // Printed for scripts and tests that start the server on port 0.
  std::cout << "attnscope-server listening on port " << (*server)->port() << std::endl;

  std::thread loader([&] {
    absl::Status loaded = (*server)->LoadModel();
    if (!loaded.ok()) {
      spdlog::error("cannot load the model: {}", std::string(loaded.message()));
      std::_Exit(1);  // no partial start: nothing was served
    }
    spdlog::info("serving {}", config.model_dir);
  });

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received {}, draining", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  if (!(*server)->service().model_ready()) {
    // Still loading: nothing was served, so there is nothing to drain.
    spdlog::info("stopped while loading the model");
    std::_Exit(0);
  }
  loader.join();
  (*server)->Drain();
  server->reset();
  return 0;
}
