// attnscope view: the interactive attention viewer of a capture file, as one self-contained
// HTML file (works offline from file://) or served on 127.0.0.1 with every head on demand.
#include <fstream>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cpp/command.h"
#include "client/cpp/view_page.h"
#include "client/cpp/view_server.h"

namespace attnscope::cli {
namespace {

constexpr char kUsage[] =
    "usage: attnscope view CAPTURE.safetensors [--report analysis.json] [--heads L:H,L:mean,...]\n"
    "           [--max-bytes N] [--terms a,b] (--out view.html | --serve [--port 8765])";

int RunView(const std::vector<std::string>& args) {
  Flags flags(args, {"serve"});
  if (!flags.error().empty()) return Fail("view", flags.error());
  if (flags.positionals().size() != 1) return Fail("view", kUsage);
  const std::string out = flags.Get("out");
  ViewOptions options;
  options.serve = flags.Has("serve");
  if (out.empty() == !options.serve)
    return Fail("view", "give exactly one of --out FILE and --serve");
  const int port = flags.GetInt("port", 8765);
  if (port < 0 || port > 65535) {
    return Fail("view", absl::StrCat("--port ", port, " is outside [0, 65535]"));
  }
  if (flags.Has("max-bytes")) {
    const std::string text = flags.Get("max-bytes");
    if (!absl::SimpleAtoi(text, &options.max_bytes) || options.max_bytes < 0) {
      return Fail("view", absl::StrCat("--max-bytes must be a byte count >= 0, got '", text, "'"));
    }
  }
  if (flags.Has("terms")) {
    options.terms = absl::StrSplit(flags.Get("terms"), ',', absl::SkipEmpty());
  }
  const std::string report_path = flags.Get("report");
  const std::string heads_text = flags.Get("heads");
  options.heads_given = flags.Has("heads");
  if (!flags.error().empty()) return Fail("view", flags.error());
  for (const auto& unknown : flags.Unread()) return Fail("view", "unknown flag " + unknown);

  auto capture = OpenCaptureFile(flags.positionals()[0]);
  if (!capture.ok()) return Fail("view", std::string(capture.status().message()));
  if (options.heads_given) {
    auto refs = ParseHeadRefs(heads_text, *capture);
    if (!refs.ok()) return Fail("view", std::string(refs.status().message()));
    options.heads = *refs;
  }
  if (!report_path.empty()) {
    std::ifstream in(report_path, std::ios::binary);
    if (!in) return Fail("view", absl::StrCat("--report ", report_path, ": cannot read"));
    options.report_json.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto document = BuildViewDocument(*capture, options);
  if (!document.ok()) return Fail("view", std::string(document.status().message()));
  const std::string page = ViewHtml(*document);
  if (options.serve) {
    auto served = ServeView(*capture, page, port);
    return served.ok() ? 0 : Fail("view", std::string(served.message()));
  }
  const std::string partial = out + ".partial";
  {
    std::ofstream file(partial, std::ios::binary | std::ios::trunc);
    file.write(page.data(), static_cast<std::streamsize>(page.size()));
    if (!file) return Fail("view", absl::StrCat("--out ", out, ": cannot write"));
  }
  if (std::rename(partial.c_str(), out.c_str()) != 0) {
    return Fail("view", absl::StrCat("--out ", out, ": cannot rename the written file"));
  }
  const auto& embedded = (*document)["embedded"];
  std::cout << "wrote " << out << ": " << page.size() << " bytes, full matrices of "
            << embedded["heads_full"].get<int>() << " of " << embedded["heads_total"].get<int>()
            << " heads (" << embedded["bytes"].get<int64_t>() << " of " << options.max_bytes
            << " bytes), thumbnails of all\n";
  return 0;
}

}  // namespace

ATTNSCOPE_REGISTER_COMMAND("view", "interactive attention viewer of a capture (HTML or --serve)",
                           RunView);

}  // namespace attnscope::cli
