// attnscope-server --config config/server.yaml [--model DIR] [--listen ADDR]
// Loads the model, then binds the port and prints "attnscope-server listening on port N" on
// stdout (the only line on stdout; the log goes to stderr), warms up (health NOT_SERVING),
// then serves (SERVING). Exits 0 after a SIGTERM/SIGINT/SIGHUP drain, 1 when the config or the
// model cannot be loaded (before any port is opened) or the port cannot be bound.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
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
  // stdout carries only the port line that scripts parse; the log (errors included) goes to
  // stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("attnscope-server"));
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  // A reader of stderr that goes away (a piped `tee` or `head`, a closed notebook) must cost
  // only the log lines, not the process: writes then fail with EPIPE instead of killing it.
  signal(SIGPIPE, SIG_IGN);

  // Signals are taken by one thread with sigwait; every other thread inherits the block.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  // SIGHUP (the terminal or a supervisor went away) drains too instead of killing mid-request.
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Load first, then listen: a missing or corrupt model never opens the port (the error,
  // naming the file, is on stderr). Loading runs beside sigwait so that a signal stops it.
  std::unique_ptr<attnscope::service::AttnScopeServer> server;
  std::atomic<bool> serving{false};
  std::thread loader([&] {
    absl::StatusOr<std::unique_ptr<attnscope::session::LoadedModel>> model =
        attnscope::service::AttnScopeServer::LoadModelFor(config);
    if (!model.ok()) {
      spdlog::error("cannot load the model: {}", std::string(model.status().message()));
      std::_Exit(1);  // no partial start: nothing was served
    }
    absl::StatusOr<std::unique_ptr<attnscope::service::AttnScopeServer>> started =
        attnscope::service::AttnScopeServer::Start(config);
    if (!started.ok()) {
      spdlog::error("cannot start: {}", std::string(started.status().message()));
      std::_Exit(1);
    }
    server = *std::move(started);
    // Printed for scripts and tests that start the server on port 0.
    std::cout << "attnscope-server listening on port " << server->port() << std::endl;
    absl::Status ready = server->ServeModel(*std::move(model));
    if (!ready.ok()) {
      spdlog::error("cannot serve the model: {}", std::string(ready.message()));
      std::_Exit(1);
    }
    serving.store(true);
    spdlog::info("serving {}", config.model_dir);
  });

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received {}, draining", signal_number == SIGTERM  ? "SIGTERM"
                                        : signal_number == SIGHUP ? "SIGHUP"
                                                                  : "SIGINT");
  if (!serving.load()) {
    // Still loading or warming up: nothing was served, so there is nothing to drain.
    spdlog::info("stopped before serving");
    std::_Exit(0);
  }
  loader.join();
  server->Drain();
  server.reset();
  return 0;
}
