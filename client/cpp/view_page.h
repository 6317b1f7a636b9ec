// The viewer page of `attnscope view`: a view data document ("attnscope.view.v1", read by
// client/viewer/src/data.js) built from a mapped capture file, and the self-contained HTML
// that carries it together with the viewer bundle (client/viewer, embedded at build time).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/capture/capture_file.h"

namespace attnscope::cli {

// Thumbnails are at most this many cells a side (T smaller: T).
inline constexpr int kThumbnailCells = 48;
inline constexpr int64_t kDefaultViewMaxBytes = 50'000'000;
// A head index meaning "the mean over the layer's captured heads".
inline constexpr int kLayerMean = -1;

struct HeadRef {
  int layer = 0;
  int head = 0;  // model head index, or kLayerMean
};

struct ViewOptions {
  std::vector<HeadRef> heads;  // empty: fill up to max_bytes in (layer, mean, heads) order
  bool heads_given = false;
  int64_t max_bytes = kDefaultViewMaxBytes;  // full matrices, counted as embedded (base64) bytes
  std::string report_json;                   // empty: no report
  std::vector<std::string> terms;            // empty: the analysis library's default list
  bool serve = false;                        // matrices fetched from api/head instead
};

// One head's (or the layer mean's) lower triangle, row i holding keys 0..i, little-endian:
// a captured head in the file's dtype, a layer mean in float32. `dtype` gets the name.
absl::StatusOr<std::string> LowerTriangleBytes(const MappedCapture& capture, const HeadRef& ref,
                                               std::string* dtype);

// "L:H,L:H,L:mean" -> refs, each checked against the capture's layers and heads.
absl::StatusOr<std::vector<HeadRef>> ParseHeadRefs(const std::string& text,
                                                   const MappedCapture& capture);

// [layers, heads, S, S] uint8 colour levels: level = floor(255 * sqrt(max over the block) +
// 0.5), block a covering rows and keys [floor(a*T/S), floor((a+1)*T/S)).
std::vector<uint8_t> Thumbnails(const MappedCapture& capture, int* cells);

absl::StatusOr<nlohmann::json> BuildViewDocument(const MappedCapture& capture,
                                                 const ViewOptions& options);

// The whole page: the document inside <script type="application/json">, then the bundle.
std::string ViewHtml(const nlohmann::json& document);

std::string Base64(const std::string& bytes);

}  // namespace attnscope::cli
