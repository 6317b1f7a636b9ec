#include "server/session/intervention_wire.h"

#include "absl/strings/str_cat.h"
#include "server/session/wire_enum.h"
#include "server/status/field_error.h"

namespace attnscope {
namespace {

constexpr std::pair<AblationMode, v1::AblationMode> kWireModes[] = {
    {AblationMode::kZero, v1::ABLATION_ZERO}, {AblationMode::kMean, v1::ABLATION_MEAN}};
constexpr std::pair<KnockoutRows, v1::KnockoutRows> kWireKnockoutRows[] = {
    {KnockoutRows::kAll, v1::KNOCKOUT_ROWS_ALL},
    {KnockoutRows::kGenerated, v1::KNOCKOUT_ROWS_GENERATED},
    {KnockoutRows::kRange, v1::KNOCKOUT_ROWS_RANGE}};

// Refusals name `field` in the message and refuse the .proto path `path`.
absl::StatusOr<AblationMode> ModeFromWire(v1::AblationMode mode, const std::string& field,
                                          const std::string& path) {
  absl::StatusOr<AblationMode> local = session::FromWireEnum(kWireModes, mode, field, "mode");
  if (!local.ok()) return WithRefusedField(local.status(), path);
  return local;
}

}  // namespace

absl::StatusOr<std::vector<Intervention>> InterventionsFromWire(const v1::Interventions& wire) {
  std::vector<Intervention> items;
  for (int i = 0; i < wire.items_size(); ++i) {
    const v1::Intervention& w = wire.items(i);
    // The message's short name; the refused field is the .proto path.
    const std::string at = absl::StrCat("interventions[", i, "]");
    const std::string path = absl::StrCat("interventions.items[", i, "]");
    Intervention item;
    switch (w.kind_case()) {
      case v1::Intervention::kAblate: {
        item.kind = Intervention::Kind::kAblate;
        item.layer = w.ablate().layer();
        item.heads.assign(w.ablate().heads().begin(), w.ablate().heads().end());
        absl::StatusOr<AblationMode> mode =
            ModeFromWire(w.ablate().mode(), at + ".mode", path + ".ablate.mode");
        if (!mode.ok()) return mode.status();
        item.mode = *mode;
        break;
      }
      case v1::Intervention::kKnockout: {
        const v1::AttentionKnockout& k = w.knockout();
        item.kind = Intervention::Kind::kKnockout;
        item.layer = k.layer();
        item.heads.assign(k.heads().begin(), k.heads().end());
        absl::StatusOr<KnockoutRows> rows =
            session::FromWireEnum(kWireKnockoutRows, k.rows(), at + ".rows", "row selection");
        if (!rows.ok()) return WithRefusedField(rows.status(), path + ".knockout.rows");
        item.rows = *rows;
        if (item.rows == KnockoutRows::kRange) {
          item.row_begin = k.row_begin();
          item.row_end = k.row_end();
        }
        item.key_positions.assign(k.key_positions().begin(), k.key_positions().end());
        item.key_terms.assign(k.key_terms().begin(), k.key_terms().end());
        break;
      }
      case v1::Intervention::kPatch:
        item.kind = Intervention::Kind::kPatch;
        item.layer = w.patch().layer();
        item.heads.assign(w.patch().heads().begin(), w.patch().heads().end());
        item.positions.assign(w.patch().positions().begin(), w.patch().positions().end());
        break;
      default:
        return WithRefusedField(FieldError(at, "{}", "set one of ablate, knockout or patch"), path);
    }
    items.push_back(std::move(item));
  }
  return items;
}

void InterventionsToWire(const std::vector<Intervention>& items,
                         google::protobuf::RepeatedPtrField<v1::Intervention>* wire) {
  for (const Intervention& item : items) {
    v1::Intervention* w = wire->Add();
    switch (item.kind) {
      case Intervention::Kind::kAblate: {
        v1::HeadAblation* a = w->mutable_ablate();
        a->set_layer(item.layer);
        for (int h : item.heads) a->add_heads(h);
        a->set_mode(session::ToWireEnum(kWireModes, item.mode));
        break;
      }
      case Intervention::Kind::kKnockout: {
        v1::AttentionKnockout* k = w->mutable_knockout();
        k->set_layer(item.layer);
        for (int h : item.heads) k->add_heads(h);
        k->set_rows(session::ToWireEnum(kWireKnockoutRows, item.rows));
        k->set_row_begin(item.row_begin);
        k->set_row_end(item.row_end);
        for (int p : item.key_positions) k->add_key_positions(p);
        for (const std::string& term : item.key_terms) k->add_key_terms(term);
        break;
      }
      case Intervention::Kind::kPatch: {
        v1::ActivationPatch* p = w->mutable_patch();
        p->set_layer(item.layer);
        for (int h : item.heads) p->add_heads(h);
        for (int position : item.positions) p->add_positions(position);
        break;
      }
    }
  }
}

absl::StatusOr<SweepSpec> SweepFromWire(const v1::Sweep& wire) {
  SweepSpec sweep;
  sweep.layers.assign(wire.layers().begin(), wire.layers().end());
  sweep.heads.assign(wire.heads().begin(), wire.heads().end());
  absl::StatusOr<AblationMode> mode = ModeFromWire(wire.mode(), "sweep.mode", "sweep.mode");
  if (!mode.ok()) return mode.status();
  sweep.mode = *mode;
  return sweep;
}

v1::Sweep SweepToWire(const SweepSpec& sweep) {
  v1::Sweep wire;
  for (int l : sweep.layers) wire.add_layers(l);
  for (int h : sweep.heads) wire.add_heads(h);
  wire.set_mode(session::ToWireEnum(kWireModes, sweep.mode));
  return wire;
}

void ScoreResultToWire(const ScoreResult& result, v1::ScoreResult* wire) {
  for (const CandidateScore& c : result.candidates) {
    v1::CandidateScore* w = wire->add_candidates();
    w->set_text(c.text);
    for (int64_t id : c.token_ids) w->add_token_ids(id);
    for (double lp : c.token_logprobs) w->add_token_logprobs(lp);
    w->set_logprob(c.logprob);
    w->set_first_token_rank(c.first_token_rank);
  }
  wire->set_has_logit_diff(result.has_logit_diff);
  wire->set_logit_diff(result.logit_diff);
}

ScoreResult ScoreResultFromWire(const v1::ScoreResult& wire) {
  ScoreResult result;
  for (const v1::CandidateScore& w : wire.candidates()) {
    CandidateScore c;
    c.text = w.text();
    c.token_ids.assign(w.token_ids().begin(), w.token_ids().end());
    c.token_logprobs.assign(w.token_logprobs().begin(), w.token_logprobs().end());
    c.logprob = w.logprob();
    c.first_token_rank = w.first_token_rank();
    result.candidates.push_back(std::move(c));
  }
  result.has_logit_diff = wire.has_logit_diff();
  result.logit_diff = wire.logit_diff();
  return result;
}

void SweepCellsToWire(const std::vector<SweepCell>& cells, v1::ScoreResult* wire) {
  for (const SweepCell& cell : cells) {
    v1::SweepHead* w = wire->add_sweep_heads();
    w->set_layer(cell.layer);
    w->set_head(cell.head);
    w->set_logit_diff(cell.logit_diff);
    w->set_delta(cell.delta);
  }
}

std::vector<SweepCell> SweepCellsFromWire(const v1::ScoreResult& wire) {
  std::vector<SweepCell> cells;
  for (const v1::SweepHead& w : wire.sweep_heads()) {
    cells.push_back({w.layer(), w.head(), w.logit_diff(), w.delta()});
  }
  return cells;
}

}  // namespace attnscope
