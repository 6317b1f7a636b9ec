// The reference cases of tests/engine/testdata/interventions_<model>.json (written by
// tests/engine/intervention_reference.py) as engine types, for the engine and service tests.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/engine/interventions.h"

namespace attnscope::testing {

inline nlohmann::json LoadInterventionReference(const std::string& model) {
  std::ifstream in(std::string(ATTNSCOPE_SOURCE_DIR) + "/tests/engine/testdata/interventions_" +
                   model + ".json");
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

inline InterventionSet InterventionsFromJson(const nlohmann::json& item_list,
                                             const nlohmann::json& source) {
  InterventionSet set;
  for (const auto& e : item_list) {
    Intervention item;
    const std::string kind = e.at("kind");
    item.layer = e.at("layer");
    item.heads = e.at("heads").get<std::vector<int>>();
    if (kind == "ablate") {
      item.kind = Intervention::Kind::kAblate;
      item.mode = e.at("mode") == "mean" ? AblationMode::kMean : AblationMode::kZero;
    } else if (kind == "knockout") {
      item.kind = Intervention::Kind::kKnockout;
      const std::string rows = e.at("rows");
      item.rows = rows == "all"         ? KnockoutRows::kAll
                  : rows == "generated" ? KnockoutRows::kGenerated
                                        : KnockoutRows::kRange;
      if (item.rows == KnockoutRows::kRange) {
        item.row_begin = e.at("row_begin");
        item.row_end = e.at("row_end");
      }
      item.key_positions = e.at("keys").get<std::vector<int>>();
    } else {
      item.kind = Intervention::Kind::kPatch;
      item.positions = e.at("positions").get<std::vector<int>>();
    }
    set.items.push_back(item);
  }
  if (source.is_array()) set.patch_source_ids = source.get<std::vector<int64_t>>();
  return set;
}

inline std::vector<Candidate> CandidatesFromJson(const nlohmann::json& doc) {
  std::vector<Candidate> candidates;
  for (const auto& ids : doc.at("candidates")) {
    candidates.push_back({"", ids.get<std::vector<int64_t>>()});
  }
  return candidates;
}

}  // namespace attnscope::testing
