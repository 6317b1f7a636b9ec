#include "client/cpp/view_page.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "analysis/report.h"
#include "analysis/terms.h"
#include "client/viewer/viewer_bundle.h"

namespace attnscope::cli {
namespace {

size_t Base64Size(size_t bytes) { return 4 * ((bytes + 2) / 3); }

// Block index of every position for `cells` blocks over `total` positions.
std::vector<int> BlockOf(int64_t total, int cells) {
  std::vector<int> block(total);
  for (int a = 0; a < cells; ++a) {
    const int64_t begin = a * total / cells;
    const int64_t end = (a + 1) * total / cells;
    for (int64_t i = begin; i < end; ++i) block[i] = a;
  }
  return block;
}

std::string HeadLabel(const HeadRef& ref) {
  return ref.head == kLayerMean ? absl::StrCat(ref.layer, ":mean")
                                : absl::StrCat(ref.layer, ":", ref.head);
}

}  // namespace

std::string Base64(const std::string& bytes) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve(Base64Size(bytes.size()));
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    out.push_back(kAlphabet[v >> 18]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  if (i < bytes.size()) {
    uint32_t v = data[i] << 16;
    if (i + 1 < bytes.size()) v |= data[i + 1] << 8;
    out.push_back(kAlphabet[v >> 18]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

absl::StatusOr<std::string> LowerTriangleBytes(const MappedCapture& capture, const HeadRef& ref,
                                               std::string* dtype) {
  auto layer_it = capture.attention.find(ref.layer);
  if (layer_it == capture.attention.end()) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", ref.layer, " was not captured"));
  }
  const TensorInfo& info = *layer_it->second;
  const int64_t t = capture.total_tokens();
  const size_t element = DTypeSize(capture.dtype);
  const uint8_t* base = capture.file->Data(info);
  const size_t triangle = static_cast<size_t>(t) * (t + 1) / 2;
  if (ref.head != kLayerMean) {
    auto head_it = std::find(capture.heads.begin(), capture.heads.end(), ref.head);
    if (head_it == capture.heads.end()) {
      return absl::InvalidArgumentError(absl::StrCat("head ", ref.head, " was not captured"));
    }
    const size_t h = head_it - capture.heads.begin();
    std::string out(triangle * element, '\0');
    size_t at = 0;
    for (int64_t i = 0; i < t; ++i) {
      const size_t row_bytes = static_cast<size_t>(i + 1) * element;
      std::memcpy(out.data() + at, base + ((h * t + i) * t) * element, row_bytes);
      at += row_bytes;
    }
    *dtype = DTypeName(capture.dtype);
    return out;
  }
  std::vector<float> sum(triangle, 0.0f);
  std::vector<float> row(t);
  for (size_t h = 0; h < capture.heads.size(); ++h) {
    size_t at = 0;
    for (int64_t i = 0; i < t; ++i) {
      DTypeValuesToFloats(base + ((h * t + i) * t) * element, i + 1, capture.dtype, row.data());
      for (int64_t j = 0; j <= i; ++j) sum[at + j] += row[j];
      at += i + 1;
    }
  }
  const float scale = 1.0f / static_cast<float>(capture.heads.size());
  for (float& value : sum) value *= scale;
  *dtype = DTypeName(DType::kFloat32);
  return std::string(reinterpret_cast<const char*>(sum.data()), sum.size() * sizeof(float));
}

absl::StatusOr<std::vector<HeadRef>> ParseHeadRefs(const std::string& text,
                                                   const MappedCapture& capture) {
  std::vector<HeadRef> refs;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(item, ':');
    HeadRef ref;
    bool ok = parts.size() == 2 && absl::SimpleAtoi(parts[0], &ref.layer);
    if (ok && parts[1] == "mean") {
      ref.head = kLayerMean;
    } else if (ok) {
      ok = absl::SimpleAtoi(parts[1], &ref.head) && ref.head >= 0;
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("--heads: '", item, "' is not LAYER:HEAD or LAYER:mean"));
    }
    if (!capture.attention.count(ref.layer)) {
      return absl::InvalidArgumentError(absl::StrCat("--heads: layer ", ref.layer,
                                                     " is not in the capture (layers ",
                                                     nlohmann::json(capture.layers).dump(), ")"));
    }
    if (ref.head != kLayerMean &&
        std::find(capture.heads.begin(), capture.heads.end(), ref.head) == capture.heads.end()) {
      return absl::InvalidArgumentError(absl::StrCat("--heads: head ", ref.head,
                                                     " is not in the capture (heads ",
                                                     nlohmann::json(capture.heads).dump(), ")"));
    }
    refs.push_back(ref);
  }
  if (refs.empty()) return absl::InvalidArgumentError("--heads: no LAYER:HEAD given");
  return refs;
}

std::vector<uint8_t> Thumbnails(const MappedCapture& capture, int* cells_out) {
  const int64_t t = capture.total_tokens();
  const int cells = static_cast<int>(std::min<int64_t>(t, kThumbnailCells));
  *cells_out = cells;
  const std::vector<int> block = BlockOf(t, cells);
  const size_t heads = capture.heads.size();
  std::vector<uint8_t> out(capture.layers.size() * heads * cells * cells, 0);
  std::vector<float> row(t), best(static_cast<size_t>(cells) * cells);
  for (size_t l = 0; l < capture.layers.size(); ++l) {
    const TensorInfo& info = *capture.attention.at(capture.layers[l]);
    const size_t element = DTypeSize(capture.dtype);
    const uint8_t* base = capture.file->Data(info);
    for (size_t h = 0; h < heads; ++h) {
      std::fill(best.begin(), best.end(), 0.0f);
      for (int64_t i = 0; i < t; ++i) {
        DTypeValuesToFloats(base + ((h * t + i) * t) * element, i + 1, capture.dtype, row.data());
        float* best_row = best.data() + static_cast<size_t>(block[i]) * cells;
        for (int64_t j = 0; j <= i; ++j) best_row[block[j]] = std::max(best_row[block[j]], row[j]);
      }
      uint8_t* thumb = out.data() + (l * heads + h) * cells * cells;
      for (size_t c = 0; c < best.size(); ++c) {
        const double v = std::min(1.0, std::max(0.0, static_cast<double>(best[c])));
        thumb[c] = static_cast<uint8_t>(std::floor(255.0 * std::sqrt(v) + 0.5));
      }
    }
  }
  return out;
}

absl::StatusOr<nlohmann::json> BuildViewDocument(const MappedCapture& capture,
                                                 const ViewOptions& options) {
  using nlohmann::json;
  const int64_t t = capture.total_tokens();
  json doc;
  doc["format"] = "attnscope.view.v1";
  auto model = capture.metadata.find("model");
  doc["model"] = model == capture.metadata.end() ? "" : model->second;
  std::vector<std::string> tokens = capture.tokens;
  if (tokens.empty()) {
    for (int64_t id : capture.token_ids) tokens.push_back(std::to_string(id));
  }
  doc["tokens"] = tokens;
  doc["token_ids"] = capture.token_ids;
  doc["prompt_length"] = capture.prompt_length;
  doc["layers"] = capture.layers;
  doc["heads"] = capture.heads;
  int cells = 0;
  const std::vector<uint8_t> thumbs = Thumbnails(capture, &cells);
  doc["thumbnails"] = {{"size", cells},
                       {"data", Base64(std::string(thumbs.begin(), thumbs.end()))}};

  // Full matrices: the --heads asked for, or (layer mean, then heads) in layer order up to
  // the byte budget.
  std::vector<HeadRef> wanted = options.heads;
  if (!options.heads_given) {
    for (int layer : capture.layers) {
      wanted.push_back({layer, kLayerMean});
      for (int head : capture.heads) wanted.push_back({layer, head});
    }
  }
  const size_t element = DTypeSize(capture.dtype);
  const size_t triangle = static_cast<size_t>(t) * (t + 1) / 2;
  json matrices = json::object();
  int64_t used = 0;
  int heads_full = 0;
  std::string first_left_out;
  if (!options.serve) {
    for (const HeadRef& ref : wanted) {
      const size_t cost = Base64Size(triangle * (ref.head == kLayerMean ? sizeof(float) : element));
      if (used + static_cast<int64_t>(cost) > options.max_bytes) {
        if (options.heads_given) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--heads: head ", HeadLabel(ref), " would bring the embedded matrices to ",
              used + cost, " bytes, over --max-bytes ", options.max_bytes,
              " (raise --max-bytes, ask for fewer heads, or use --serve)"));
        }
        if (first_left_out.empty()) first_left_out = HeadLabel(ref);
        continue;
      }
      std::string dtype;
      auto bytes = LowerTriangleBytes(capture, ref, &dtype);
      if (!bytes.ok()) return bytes.status();
      matrices[HeadLabel(ref)] = {{"dtype", dtype}, {"data", Base64(*bytes)}};
      used += static_cast<int64_t>(cost);
      if (ref.head != kLayerMean) ++heads_full;
    }
  }
  const int heads_total = static_cast<int>(capture.layers.size() * capture.heads.size());
  doc["matrices"] = matrices;
  std::string note;
  if (options.heads_given) note = "The heads given with --heads are embedded.";
  if (!first_left_out.empty()) {
    note = absl::StrCat(
        "Matrices are embedded in layer order until the budget ran out (first "
        "left out: ",
        first_left_out, ").");
  }
  doc["embedded"] = {{"max_bytes", options.max_bytes},
                     {"bytes", used},
                     {"heads_total", heads_total},
                     {"heads_full", options.serve ? heads_total : heads_full},
                     {"note", note}};
  doc["serve"] = options.serve;

  // Financial terms: the report's matches when a report is given, else the analysis
  // library's matcher over the joined token strings.
  json terms = json::array();
  doc["report"] = nullptr;
  if (!options.report_json.empty()) {
    json report;
    try {
      report = json::parse(options.report_json);
    } catch (const std::exception& error) {
      return absl::InvalidArgumentError(absl::StrCat("--report: not JSON: ", error.what()));
    }
    auto parsed = analysis::ReportFromJson(report);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--report: ", parsed.status().message()));
    }
    if (static_cast<int64_t>(parsed->tokens.size()) != t) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--report: the report has ", parsed->tokens.size(), " tokens, the capture has ", t,
          " (analyse this capture: attnscope analyze --from CAPTURE --json)"));
    }
    for (const auto& match : parsed->terms) {
      terms.push_back({{"term", match.term}, {"word", match.word}, {"positions", match.positions}});
    }
    doc["report"] = std::move(report);
  } else {
    std::string text;
    std::vector<analysis::TokenSpan> spans;
    analysis::JoinTokens(capture.tokens, &text, &spans);
    const std::vector<std::string> list =
        options.terms.empty() ? analysis::DefaultFinancialTerms() : options.terms;
    if (!capture.tokens.empty()) {
      for (const auto& match : analysis::FindTermsInText(text, spans, list)) {
        terms.push_back(
            {{"term", match.term}, {"word", match.word}, {"positions", match.positions}});
      }
    }
  }
  doc["terms"] = terms;
  return doc;
}

namespace {

// JSON for a <script> element: "<" occurs only inside JSON strings, and \u003c keeps
// "</script>" and "<!--" out of the page.
std::string ScriptJson(const nlohmann::json& value) {
  const std::string data = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string escaped;
  escaped.reserve(data.size());
  for (char c : data) {
    if (c == '<') {
      escaped += "\\u003c";
    } else {
      escaped.push_back(c);
    }
  }
  return escaped;
}

}  // namespace

std::string ViewHtml(const nlohmann::json& document) {
  // The first head's matrix stays in the document; the others follow the viewer's script as
  // their own elements, so the page draws before the browser has read them all (they are
  // most of the file). data.js reads them once the document has loaded.
  nlohmann::json head = document;
  nlohmann::json deferred = nlohmann::json::object();
  std::string matrices_html;
  const nlohmann::json& all = document["matrices"];
  std::string first;
  for (int layer : document["layers"].get<std::vector<int>>()) {
    for (int h : document["heads"].get<std::vector<int>>()) {
      const std::string key = absl::StrCat(layer, ":", h);
      if (first.empty() && all.contains(key)) first = key;
    }
  }
  head["matrices"] = nlohmann::json::object();
  for (const auto& [key, entry] : all.items()) {
    if (key == first) {
      head["matrices"][key] = entry;
      continue;
    }
    deferred[key] = entry["dtype"];
    absl::StrAppend(&matrices_html,
                    "<script type=\"application/octet-stream\" id=\"attnscope-matrix-", key, "\">",
                    entry["data"].get<std::string>(), "</script>\n");
  }
  head["deferred"] = deferred;
  std::string title = "attnscope viewer";
  if (document.contains("model") && document["model"].is_string()) {
    std::string safe;
    for (char c : document["model"].get<std::string>()) {
      if (c == '<' || c == '>' || c == '&') continue;
      safe.push_back(c);
    }
    if (!safe.empty()) title += " \xC2\xB7 " + safe;
  }
  return absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" "
      "content=\"width=device-width, initial-scale=1\">\n<title>",
      title, "</title></head>\n<body style=\"margin:0\"><div id=\"attnscope\"></div>\n",
      "<script type=\"application/json\" id=\"attnscope-data\">", ScriptJson(head),
      "</script>\n<script>", std::string(kViewerBundle, kViewerBundleSize),
      "\nAttnScopeViewer.mountPage();</script>\n", matrices_html, "</body></html>\n");
}

}  // namespace attnscope::cli
