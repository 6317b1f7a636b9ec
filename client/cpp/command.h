// Subcommands of the `attnscope` command line register themselves here, so each lives in
// its own file (capture, analyze, tokenize, ...) and main.cc only dispatches.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace attnscope::cli {

// Parsed `--flag value`, `--flag=value` and `--switch` arguments plus positionals.
class Flags {
 public:
  // `switches` are flags that take no value (e.g. "greedy", "json").
  Flags(const std::vector<std::string>& args, const std::vector<std::string>& switches);
  bool Has(const std::string& name) const;
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  // Parses a number; on failure records an error naming the flag and value.
  int GetInt(const std::string& name, int fallback);
  double GetDouble(const std::string& name, double fallback);
  const std::vector<std::string>& positionals() const { return positionals_; }
  // Flags given but never read: reported as "unknown flag" by the command.
  std::vector<std::string> Unread() const;
  const std::string& error() const { return error_; }

 private:
  std::map<std::string, std::string> values_;
  mutable std::map<std::string, bool> read_;
  std::vector<std::string> positionals_;
  std::string error_;
};

using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string name;
  std::string summary;
  CommandFn run;
};

std::map<std::string, Command>& CommandRegistry();
// `attnscope <command> --help` text per command: its synopsis and flags.
std::map<std::string, std::string>& CommandUsageRegistry();

struct CommandUsageRegistrar {
  CommandUsageRegistrar(const std::string& name, const std::string& usage) {
    CommandUsageRegistry()[name] = usage;
  }
};

struct CommandRegistrar {
  CommandRegistrar(const std::string& name, const std::string& summary, CommandFn run) {
    CommandRegistry()[name] = Command{name, summary, std::move(run)};
  }
};

// Prints "attnscope <command>: <message>" to stderr and returns exit code 1.
int Fail(const std::string& command, const std::string& message);

}  // namespace attnscope::cli

#define ATTNSCOPE_REGISTER_COMMAND(name, summary, fn) \
  static ::attnscope::cli::CommandRegistrar attnscope_command_##fn(name, summary, fn)

// The text `attnscope <name> --help` prints (synopsis, then one flag group a line).
#define ATTNSCOPE_COMMAND_USAGE(name, fn, usage) \
  static ::attnscope::cli::CommandUsageRegistrar attnscope_usage_##fn(name, usage)
