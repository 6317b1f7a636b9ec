#include "server/session/request_proto.h"

#include "absl/strings/str_cat.h"
#include "server/session/intervention_wire.h"
#include "server/session/wire_enum.h"
#include "server/status/field_error.h"

namespace attnscope::session {
namespace {

// The first entry of each is what ToWireEnum falls back to.
constexpr std::pair<DType, v1::DType> kWireDTypes[] = {{DType::kFloat32, v1::DTYPE_FLOAT32},
                                                       {DType::kFloat16, v1::DTYPE_FLOAT16},
                                                       {DType::kBFloat16, v1::DTYPE_BFLOAT16}};
constexpr std::pair<CaptureRows, v1::RowSelection> kWireRows[] = {
    {CaptureRows::kAll, v1::ROWS_ALL},
    {CaptureRows::kPromptOnly, v1::ROWS_PROMPT_ONLY},
    {CaptureRows::kGeneratedOnly, v1::ROWS_GENERATED_ONLY}};

template <typename Proto>
void InputToProto(const PromptInput& input, Proto* proto);

template <typename Proto>
void InputToProto(const Request& request, Proto* proto) {
  if (request.input) InputToProto(*request.input, proto);
}

template <typename Proto>
void InputToProto(const PromptInput& input, Proto* proto) {
  proto->set_plain_text(!input.parse_special_tokens);
  switch (input.kind) {
    case PromptInput::Kind::kText:
      proto->set_text(input.text);
      break;
    case PromptInput::Kind::kChat: {
      v1::ChatMessages* messages = proto->mutable_messages();
      for (const ChatMessage& message : input.messages) {
        v1::ChatMessage* out = messages->add_messages();
        out->set_role(message.role);
        out->set_content(message.content);
      }
      messages->set_no_generation_prompt(!input.add_generation_prompt);
      messages->set_messages_json(input.messages_json);
      messages->set_tools_json(input.tools_json);
      messages->set_documents_json(input.documents_json);
      messages->set_template_kwargs_json(input.template_kwargs_json);
      messages->set_template_date(input.template_date);
      break;
    }
    case PromptInput::Kind::kIds:
      for (int64_t id : input.ids) proto->mutable_ids()->add_ids(id);
      break;
  }
}

template <typename Proto>
std::optional<PromptInput> InputFromProto(const Proto& proto) {
  PromptInput input;
  input.parse_special_tokens = !proto.plain_text();
  switch (proto.input_case()) {
    case Proto::kText:
      input.kind = PromptInput::Kind::kText;
      input.text = proto.text();
      break;
    case Proto::kMessages:
      input.kind = PromptInput::Kind::kChat;
      for (const v1::ChatMessage& m : proto.messages().messages()) {
        input.messages.push_back({m.role(), m.content()});
      }
      input.add_generation_prompt = !proto.messages().no_generation_prompt();
      input.messages_json = proto.messages().messages_json();
      input.tools_json = proto.messages().tools_json();
      input.documents_json = proto.messages().documents_json();
      input.template_kwargs_json = proto.messages().template_kwargs_json();
      input.template_date = proto.messages().template_date();
      break;
    case Proto::kIds:
      input.kind = PromptInput::Kind::kIds;
      input.ids.assign(proto.ids().ids().begin(), proto.ids().ids().end());
      break;
    default:
      return std::nullopt;
  }
  return input;
}

void GenerationToProto(const GenerationSpec& spec, v1::GenerationParams* out) {
  out->set_max_new_tokens(spec.max_new_tokens);
  out->set_prompt_only(spec.prompt_only);
  out->set_sample(spec.sample);
  out->set_temperature(spec.temperature);
  out->set_top_k(spec.top_k);
  out->set_top_p(spec.top_p);
  out->set_repetition_penalty(spec.repetition_penalty);
  out->set_seed(spec.seed);
  for (const std::string& stop : spec.stop_strings) out->add_stop_strings(stop);
  for (int64_t id : spec.eos_token_ids) out->add_eos_token_ids(id);
  out->set_ignore_eos(spec.ignore_eos);
}

GenerationSpec GenerationFromProto(const v1::GenerationParams& p) {
  GenerationSpec spec;
  spec.max_new_tokens = p.max_new_tokens();
  spec.prompt_only = p.prompt_only();
  spec.sample = p.sample();
  spec.temperature = p.temperature();
  spec.top_k = p.top_k();
  spec.top_p = p.top_p();
  spec.repetition_penalty = p.repetition_penalty();
  spec.seed = p.seed();
  spec.stop_strings.assign(p.stop_strings().begin(), p.stop_strings().end());
  spec.eos_token_ids.assign(p.eos_token_ids().begin(), p.eos_token_ids().end());
  spec.ignore_eos = p.ignore_eos();
  return spec;
}

void InterventionsToProto(const Request& request, v1::Interventions* out) {
  InterventionsToWire(request.interventions, out->mutable_items());
  if (request.patch_source) InputToProto(*request.patch_source, out->mutable_patch_source());
}

absl::Status InterventionsFromProto(const v1::Interventions& in, Request* request) {
  absl::StatusOr<std::vector<Intervention>> items = InterventionsFromWire(in);
  if (!items.ok()) return items.status();
  request->interventions = *std::move(items);
  if (in.has_patch_source()) {
    request->patch_source = InputFromProto(in.patch_source());
    if (!request->patch_source) {
      return WithRefusedField(
          FieldError("patch_source", "{}",
                     "set one of text, messages or ids (or leave patch_source out)"),
          "interventions.patch_source");
    }
  }
  return absl::OkStatus();
}

}  // namespace

v1::DType ToWireDType(DType dtype) { return ToWireEnum(kWireDTypes, dtype); }

v1::RowSelection ToWireRows(CaptureRows rows) { return ToWireEnum(kWireRows, rows); }

absl::StatusOr<DType> FromWireDType(int dtype, const std::string& field) {
  if (dtype == v1::DTYPE_UNSPECIFIED) return DType::kFloat32;
  return FromWireEnum(kWireDTypes, dtype, field, "dtype");
}

absl::StatusOr<CaptureRows> FromWireRows(int rows, const std::string& field) {
  return FromWireEnum(kWireRows, rows, field, "row selection");
}

v1::GenerateRequest ToGenerateRequest(const Request& request) {
  v1::GenerateRequest proto;
  InputToProto(request, &proto);
  GenerationToProto(request.generation, proto.mutable_generation());
  v1::CaptureSpec* capture = proto.mutable_capture();
  for (int layer : request.capture.layers) capture->add_layers(layer);
  for (int head : request.capture.heads) capture->add_heads(head);
  capture->set_dtype(ToWireDType(request.capture.dtype));
  capture->set_rows(ToWireRows(request.capture.rows));
  capture->set_disabled(request.capture.disabled);
  InterventionsToProto(request, proto.mutable_interventions());
  proto.set_client_tag(request.client_tag);
  return proto;
}

v1::AnalyzeRequest ToAnalyzeRequest(const Request& request) {
  v1::AnalyzeRequest proto;
  InputToProto(request, &proto);
  GenerationToProto(request.generation, proto.mutable_generation());
  const AnalysisSpec& spec = request.analysis;
  v1::AnalysisSpec* out = proto.mutable_analysis();
  for (int layer : spec.layers) out->add_layers(layer);
  for (int head : spec.heads) out->add_heads(head);
  for (const std::string& term : spec.terms) out->add_terms(term);
  for (const std::string& query : spec.queries) out->add_queries(query);
  out->set_query_positions(spec.query_positions);
  out->set_top_k(spec.top_k);
  out->set_beginning_k(spec.beginning_k);
  out->set_top_terms(spec.top_terms);
  out->set_self_threshold(spec.self_threshold);
  out->set_focused_entropy_threshold(spec.focused_entropy_threshold);
  out->set_include_term_submatrix(spec.include_term_submatrix);
  out->set_top_k_per_head(spec.top_k_per_head);
  if (spec.induction_probe) {
    out->mutable_induction_probe()->set_length(spec.induction_probe->length);
    out->mutable_induction_probe()->set_seed(spec.induction_probe->seed);
  }
  InterventionsToProto(request, proto.mutable_interventions());
  proto.set_client_tag(request.client_tag);
  return proto;
}

v1::TokenizeRequest ToTokenizeRequest(const Request& request) {
  v1::TokenizeRequest proto;
  InputToProto(request, &proto);
  return proto;
}

absl::StatusOr<Request> FromProto(const v1::GenerateRequest& proto) {
  Request request;
  request.input = InputFromProto(proto);
  request.generation = GenerationFromProto(proto.generation());
  const v1::CaptureSpec& capture = proto.capture();
  absl::StatusOr<DType> dtype = FromWireDType(capture.dtype(), "capture.dtype");
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<CaptureRows> rows = FromWireRows(capture.rows(), "capture.rows");
  if (!rows.ok()) return rows.status();
  request.capture.layers.assign(capture.layers().begin(), capture.layers().end());
  request.capture.heads.assign(capture.heads().begin(), capture.heads().end());
  request.capture.dtype = *dtype;
  request.capture.rows = *rows;
  request.capture.disabled = capture.disabled();
  request.client_tag = proto.client_tag();
  if (auto status = InterventionsFromProto(proto.interventions(), &request); !status.ok()) {
    return status;
  }
  return request;
}

absl::StatusOr<Request> FromProto(const v1::AnalyzeRequest& proto) {
  Request request;
  request.input = InputFromProto(proto);
  request.generation = GenerationFromProto(proto.generation());
  const v1::AnalysisSpec& in = proto.analysis();
  AnalysisSpec& spec = request.analysis;
  spec.layers.assign(in.layers().begin(), in.layers().end());
  spec.heads.assign(in.heads().begin(), in.heads().end());
  spec.terms.assign(in.terms().begin(), in.terms().end());
  spec.queries.assign(in.queries().begin(), in.queries().end());
  spec.query_positions = in.query_positions();
  spec.top_k = in.top_k();
  spec.beginning_k = in.beginning_k();
  spec.top_terms = in.top_terms();
  spec.self_threshold = in.self_threshold();
  spec.focused_entropy_threshold = in.focused_entropy_threshold();
  spec.include_term_submatrix = in.include_term_submatrix();
  spec.top_k_per_head = in.top_k_per_head();
  if (in.has_induction_probe()) {
    spec.induction_probe =
        InductionProbeSpec{in.induction_probe().length(), in.induction_probe().seed()};
  }
  request.client_tag = proto.client_tag();
  if (auto status = InterventionsFromProto(proto.interventions(), &request); !status.ok()) {
    return status;
  }
  return request;
}

absl::StatusOr<Request> FromProto(const v1::TokenizeRequest& proto) {
  Request request;
  request.input = InputFromProto(proto);
  return request;
}

absl::StatusOr<Request> FromProto(const v1::ScoreRequest& proto) {
  Request request;
  request.input = InputFromProto(proto);
  request.client_tag = proto.client_tag();
  if (auto status = InterventionsFromProto(proto.interventions(), &request); !status.ok()) {
    return status;
  }
  return request;
}

void InputToScoreRequest(const Request& request, v1::ScoreRequest* proto) {
  InputToProto(request, proto);
  InterventionsToProto(request, proto->mutable_interventions());
  proto->set_client_tag(request.client_tag);
}

}  // namespace attnscope::session
