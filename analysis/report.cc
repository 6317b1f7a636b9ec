#include "analysis/report.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace attnscope::analysis {

namespace {

nlohmann::json ScoresToJson(const std::vector<HeadScore>& scores) {
  nlohmann::json list = nlohmann::json::array();
  for (const HeadScore& score : scores) {
    list.push_back({{"layer", score.layer}, {"head", score.head}, {"score", score.score}});
  }
  return list;
}

// Token strings may hold raw bytes of a split UTF-8 character; keep JSON valid.
std::string Printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

nlohmann::json HeadMetricsToJson(const HeadMetrics& metrics) {
  return {{"diagonal", metrics.diagonal}, {"previous_token", metrics.previous_token},
          {"causal", metrics.causal},     {"beginning", metrics.beginning},
          {"sink", metrics.sink},         {"entropy", metrics.entropy},
          {"max", metrics.max},           {"type", metrics.type}};
}

nlohmann::json ReportToJson(const HeadReport& report) {
  nlohmann::json doc;
  doc["tokens"] = report.tokens;
  doc["prompt_length"] = report.prompt_length;
  doc["generated_text"] = report.generated_text;

  nlohmann::json layers = nlohmann::json::array();
  for (const LayerReport& layer : report.layers) {
    nlohmann::json heads = nlohmann::json::array();
    for (const HeadEntry& entry : layer.heads) {
      nlohmann::json head = {{"head", entry.head}};
      head.update(HeadMetricsToJson(entry.metrics));
      if (entry.generated_rows) head["generated_rows"] = HeadMetricsToJson(*entry.generated_rows);
      heads.push_back(std::move(head));
    }
    const int h = layer.stats.num_heads, t = layer.stats.seq_length;
    layers.push_back({{"layer", layer.layer},
                      {"shape", {h, t, t}},
                      {"num_heads", h},
                      {"seq_length", t},
                      {"mean_attention", layer.stats.mean_attention},
                      {"max_attention", layer.stats.max_attention},
                      {"attention_entropy", layer.stats.attention_entropy},
                      {"heads", std::move(heads)}});
  }
  doc["layers"] = std::move(layers);

  nlohmann::json terms = nlohmann::json::array();
  for (const TermMatch& match : report.terms) {
    terms.push_back({{"term", match.term},
                     {"word", match.word},
                     {"word_bytes", {match.word_begin, match.word_end}},
                     {"positions", match.positions}});
  }
  doc["terms"] = std::move(terms);

  nlohmann::json term_attention = nlohmann::json::array();
  for (const TermAttention& entry : report.term_attention) {
    nlohmann::json top = nlohmann::json::array();
    for (const TermMass& term : entry.top_terms) {
      top.push_back({{"term", term.term}, {"mass", term.mass}});
    }
    nlohmann::json item = {{"layer", entry.layer},
                           {"head", entry.head},
                           {"mean", entry.mean},
                           {"max", entry.max},
                           {"top_terms", std::move(top)}};
    if (entry.has_submatrix) {
      nlohmann::json values = nlohmann::json::array();
      const size_t columns = entry.positions.size();
      for (size_t r = 0; r < entry.rows.size(); ++r) {
        values.push_back(std::vector<float>(entry.submatrix.begin() + r * columns,
                                            entry.submatrix.begin() + (r + 1) * columns));
      }
      item["submatrix"] = {
          {"rows", entry.rows}, {"positions", entry.positions}, {"values", std::move(values)}};
    }
    term_attention.push_back(std::move(item));
  }
  doc["term_attention"] = std::move(term_attention);

  nlohmann::json top_k = nlohmann::json::array();
  for (const TopKList& list : report.top_k) {
    nlohmann::json keys = nlohmann::json::array();
    for (const KeyWeight& key : list.keys) {
      keys.push_back({{"position", key.position}, {"token", key.token}, {"weight", key.weight}});
    }
    top_k.push_back({{"layer", list.layer},
                     {"head", list.head ? nlohmann::json(*list.head) : nlohmann::json(nullptr)},
                     {"query", list.query},
                     {"query_position", list.query_position},
                     {"query_token", list.query_token},
                     {"keys", std::move(keys)}});
  }
  doc["top_k"] = std::move(top_k);

  nlohmann::json detectors = {{"previous_token", ScoresToJson(report.detectors.previous_token)},
                              {"duplicate_token", ScoresToJson(report.detectors.duplicate_token)},
                              {"induction", ScoresToJson(report.detectors.induction)}};
  if (report.detectors.probe) {
    detectors["induction_probe"] = {{"repeat_length", report.detectors.probe->repeat_length},
                                    {"first_position", report.detectors.probe->first_position}};
  }
  doc["detectors"] = std::move(detectors);
  return doc;
}

namespace {

HeadMetrics HeadMetricsFromJson(const nlohmann::json& object) {
  HeadMetrics metrics;
  metrics.diagonal = object.at("diagonal").get<double>();
  metrics.previous_token = object.at("previous_token").get<double>();
  metrics.causal = object.at("causal").get<double>();
  metrics.beginning = object.at("beginning").get<double>();
  metrics.sink = object.at("sink").get<double>();
  metrics.entropy = object.at("entropy").get<double>();
  metrics.max = object.at("max").get<double>();
  metrics.type = object.at("type").get<std::string>();
  return metrics;
}

std::vector<HeadScore> ScoresFromJson(const nlohmann::json& list) {
  std::vector<HeadScore> scores;
  for (const auto& item : list) {
    scores.push_back(
        {item.at("layer").get<int>(), item.at("head").get<int>(), item.at("score").get<double>()});
  }
  return scores;
}

}  // namespace

absl::StatusOr<HeadReport> ReportFromJson(const nlohmann::json& doc) {
  HeadReport report;
  try {
    report.tokens = doc.at("tokens").get<std::vector<std::string>>();
    report.prompt_length = doc.at("prompt_length").get<int>();
    report.generated_text = doc.at("generated_text").get<std::string>();
    for (const auto& layer_json : doc.at("layers")) {
      LayerReport layer;
      layer.layer = layer_json.at("layer").get<int>();
      layer.stats.num_heads = layer_json.at("num_heads").get<int>();
      layer.stats.seq_length = layer_json.at("seq_length").get<int>();
      layer.stats.mean_attention = layer_json.at("mean_attention").get<double>();
      layer.stats.max_attention = layer_json.at("max_attention").get<double>();
      layer.stats.attention_entropy = layer_json.at("attention_entropy").get<double>();
      for (const auto& head_json : layer_json.at("heads")) {
        HeadEntry entry;
        entry.head = head_json.at("head").get<int>();
        entry.metrics = HeadMetricsFromJson(head_json);
        if (head_json.contains("generated_rows")) {
          entry.generated_rows = HeadMetricsFromJson(head_json.at("generated_rows"));
        }
        layer.heads.push_back(std::move(entry));
      }
      report.layers.push_back(std::move(layer));
    }
    for (const auto& item : doc.at("terms")) {
      TermMatch match;
      match.term = item.at("term").get<std::string>();
      match.word = item.at("word").get<std::string>();
      const auto bytes = item.at("word_bytes").get<std::vector<int>>();
      if (bytes.size() == 2) {
        match.word_begin = bytes[0];
        match.word_end = bytes[1];
      }
      match.positions = item.at("positions").get<std::vector<int>>();
      report.terms.push_back(std::move(match));
    }
    for (const auto& item : doc.at("term_attention")) {
      TermAttention entry;
      entry.layer = item.at("layer").get<int>();
      entry.head = item.at("head").get<int>();
      entry.mean = item.at("mean").get<double>();
      entry.max = item.at("max").get<double>();
      for (const auto& term : item.at("top_terms")) {
        entry.top_terms.push_back(
            {term.at("term").get<std::string>(), term.at("mass").get<double>()});
      }
      if (item.contains("submatrix")) {
        const auto& sub = item.at("submatrix");
        entry.has_submatrix = true;
        entry.rows = sub.at("rows").get<std::vector<int>>();
        entry.positions = sub.at("positions").get<std::vector<int>>();
        for (const auto& row : sub.at("values")) {
          for (const auto& value : row) entry.submatrix.push_back(value.get<float>());
        }
      }
      report.term_attention.push_back(std::move(entry));
    }
    for (const auto& item : doc.at("top_k")) {
      TopKList list;
      list.layer = item.at("layer").get<int>();
      if (!item.at("head").is_null()) list.head = item.at("head").get<int>();
      list.query = item.at("query").get<std::string>();
      list.query_position = item.at("query_position").get<int>();
      list.query_token = item.at("query_token").get<std::string>();
      for (const auto& key : item.at("keys")) {
        list.keys.push_back({key.at("position").get<int>(), key.at("token").get<std::string>(),
                             key.at("weight").get<double>()});
      }
      report.top_k.push_back(std::move(list));
    }
    const auto& detectors = doc.at("detectors");
    report.detectors.previous_token = ScoresFromJson(detectors.at("previous_token"));
    report.detectors.duplicate_token = ScoresFromJson(detectors.at("duplicate_token"));
    report.detectors.induction = ScoresFromJson(detectors.at("induction"));
    if (detectors.contains("induction_probe")) {
      const auto& probe = detectors.at("induction_probe");
      report.detectors.probe = InductionProbe{probe.at("repeat_length").get<int>(),
                                              probe.at("first_position").get<int>()};
    }
  } catch (const nlohmann::json::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat("analysis report JSON: missing or mistyped field: ", error.what()));
  }
  return report;
}

std::string FormatReportText(const HeadReport& report) {
  std::string out;
  const int total = static_cast<int>(report.tokens.size());
  absl::StrAppend(&out, "Tokens: ", total, " (prompt ", report.prompt_length, ", generated ",
                  total - report.prompt_length, ")\n");
  if (!report.generated_text.empty()) {
    absl::StrAppend(&out, "Generated: ", Printable(report.generated_text), "\n");
  }
  for (const LayerReport& layer : report.layers) {
    const LayerStats& s = layer.stats;
    absl::StrAppend(&out, "\nLayer ", layer.layer, ":\n");
    absl::StrAppend(
        &out, absl::StrFormat("  Shape: [%d, %d, %d]\n", s.num_heads, s.seq_length, s.seq_length));
    absl::StrAppend(&out, absl::StrFormat("  Mean attention: %.6f\n", s.mean_attention));
    absl::StrAppend(&out, absl::StrFormat("  Max attention: %.6f\n", s.max_attention));
    absl::StrAppend(&out, absl::StrFormat("  Attention entropy: %.4f\n", s.attention_entropy));
    absl::StrAppend(&out, absl::StrFormat("  %-5s %8s %8s %8s %9s %8s %8s %8s  %-18s %s\n", "head",
                                          "diagonal", "prev_tok", "causal", "beginning", "sink",
                                          "entropy", "max", "type", "type (generated)"));
    for (const HeadEntry& entry : layer.heads) {
      const HeadMetrics& m = entry.metrics;
      absl::StrAppend(
          &out, absl::StrFormat("  %-5d %8.4f %8.4f %8.4f %9.4f %8.4f %8.4f %8.4f  %-18s %s\n",
                                entry.head, m.diagonal, m.previous_token, m.causal, m.beginning,
                                m.sink, m.entropy, m.max, m.type,
                                entry.generated_rows ? entry.generated_rows->type : "-"));
    }
  }
  if (!report.terms.empty()) {
    absl::StrAppend(&out, "\nFinancial terms found:\n");
    for (const TermMatch& match : report.terms) {
      absl::StrAppend(&out, "  ", match.term, " in '", Printable(match.word), "' at positions [",
                      absl::StrJoin(match.positions, ", "), "]\n");
    }
  }
  if (!report.term_attention.empty()) {
    absl::StrAppend(&out, "\nAttention from generated tokens to terms:\n");
    for (const TermAttention& entry : report.term_attention) {
      std::vector<std::string> top;
      for (const TermMass& term : entry.top_terms) {
        top.push_back(absl::StrFormat("%s %.4f", term.term, term.mass));
      }
      absl::StrAppend(
          &out, absl::StrFormat("  layer %d head %d: mean %.4f max %.4f  top: %s\n", entry.layer,
                                entry.head, entry.mean, entry.max, absl::StrJoin(top, ", ")));
    }
  }
  for (const TopKList& list : report.top_k) {
    absl::StrAppend(&out, "\nTop ", list.keys.size(), " keys of position ", list.query_position,
                    " ('", Printable(list.query_token), "'), layer ", list.layer, ", ",
                    list.head ? absl::StrCat("head ", *list.head) : "mean over heads", ":\n");
    for (const KeyWeight& key : list.keys) {
      absl::StrAppend(&out,
                      absl::StrFormat("  %5d %-20s %.4f\n", key.position,
                                      absl::StrCat("'", Printable(key.token), "'"), key.weight));
    }
  }
  const auto print_ranking = [&out](const char* name, const std::vector<HeadScore>& scores) {
    if (scores.empty()) return;
    absl::StrAppend(&out, "\nDetector ", name, " (best first):\n");
    const size_t shown = std::min<size_t>(scores.size(), 10);
    for (size_t n = 0; n < shown; ++n) {
      absl::StrAppend(&out, absl::StrFormat("  layer %3d head %3d  %.4f\n", scores[n].layer,
                                            scores[n].head, scores[n].score));
    }
  };
  print_ranking("previous-token", report.detectors.previous_token);
  print_ranking("duplicate-token", report.detectors.duplicate_token);
  print_ranking("induction", report.detectors.induction);
  return out;
}

}  // namespace attnscope::analysis
