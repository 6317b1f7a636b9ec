#include "client/cpp/command.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>

namespace attnscope::cli {

Flags::Flags(const std::vector<std::string>& args, const std::vector<std::string>& switches) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      positionals_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    const size_t equals = name.find('=');
    if (equals != std::string::npos) {
      values_[name.substr(0, equals)] = name.substr(equals + 1);
      continue;
    }
    if (std::find(switches.begin(), switches.end(), name) != switches.end()) {
      values_[name] = "true";
    } else if (i + 1 < args.size()) {
      values_[name] = args[++i];
    } else {
      error_ = "flag --" + name + " needs a value";
    }
  }
}

bool Flags::Has(const std::string& name) const {
  read_[name] = true;
  return values_.count(name) > 0;
}

std::string Flags::Get(const std::string& name, const std::string& fallback) const {
  read_[name] = true;
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int Flags::GetInt(const std::string& name, int fallback) {
  if (!Has(name)) return fallback;
  const std::string text = Get(name);
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || value < -2147483647L || value > 2147483647L) {
    error_ = "--" + name + " must be an integer, got '" + text + "'";
    return fallback;
  }
  return static_cast<int>(value);
}

double Flags::GetDouble(const std::string& name, double fallback) {
  if (!Has(name)) return fallback;
  const std::string text = Get(name);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0') {
    error_ = "--" + name + " must be a number, got '" + text + "'";
    return fallback;
  }
  return value;
}

std::vector<std::string> Flags::Unread() const {
  std::vector<std::string> unread;
  for (const auto& [name, value] : values_) {
    if (!read_.count(name)) unread.push_back("--" + name);
  }
  return unread;
}

std::map<std::string, Command>& CommandRegistry() {
  static auto* registry = new std::map<std::string, Command>();
  return *registry;
}

std::map<std::string, std::string>& CommandUsageRegistry() {
  static auto* registry = new std::map<std::string, std::string>();
  return *registry;
}

int Fail(const std::string& command, const std::string& message) {
  std::cerr << "attnscope " << command << ": " << message << std::endl;
  return 1;
}

}  // namespace attnscope::cli
