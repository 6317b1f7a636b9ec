// attnscope: the command line. Each subcommand registers itself (see command.h).
#include <iostream>
#include <string>
#include <vector>

#include "client/cpp/command.h"

int main(int argc, char** argv) {
  auto& registry = attnscope::cli::CommandRegistry();
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "help") {
    std::cerr << "usage: attnscope <command> [flags]\n\ncommands:\n";
    for (const auto& [name, command] : registry) {
      std::cerr << "  " << name << std::string(name.size() < 18 ? 18 - name.size() : 1, ' ')
                << command.summary << "\n";
    }
    return argc < 2 ? 2 : 0;
  }
  auto it = registry.find(argv[1]);
  if (it == registry.end()) {
    std::cerr << "attnscope: unknown command '" << argv[1] << "' (try: attnscope help)\n";
    return 2;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h") {
      const auto& usage = attnscope::cli::CommandUsageRegistry();
      auto text = usage.find(it->first);
      std::cout << "attnscope " << it->first << ": " << it->second.summary << "\n\n"
                << (text != usage.end() ? text->second : "usage: attnscope " + it->first + "\n");
      return 0;
    }
  }
  return it->second.run(args);
}
