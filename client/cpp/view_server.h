// `attnscope view --serve`: the viewer page over HTTP on 127.0.0.1, with every head's full
// matrix fetched on demand from the mapped capture file (GET api/head?layer=L&head=H|mean).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "server/capture/capture_file.h"

namespace attnscope::cli {

// Serves `page` at "/" and the capture's heads at "/api/head" until SIGINT or SIGTERM. Port 0
// picks a free one. Prints "serving http://127.0.0.1:PORT/" on stdout once listening.
absl::Status ServeView(const MappedCapture& capture, const std::string& page, int port);

}  // namespace attnscope::cli
