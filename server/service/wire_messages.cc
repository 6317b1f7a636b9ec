#include "server/service/wire_messages.h"

#include "analysis/report.h"
#include "server/session/intervention_wire.h"
#include "server/session/request_proto.h"

namespace attnscope::service {
namespace {

void FillTimings(const GenerationResult& result, double queue_seconds, double total_seconds,
                 v1::Timings* timings) {
  timings->set_queue_seconds(queue_seconds);
  timings->set_prefill_seconds(result.prefill_seconds);
  timings->set_decode_seconds(result.decode_seconds);
  timings->set_total_seconds(total_seconds);
}

void FillHeadMetrics(const analysis::HeadMetrics& m, v1::HeadMetrics* out) {
  out->set_diagonal(m.diagonal);
  out->set_previous_token(m.previous_token);
  out->set_causal(m.causal);
  out->set_beginning(m.beginning);
  out->set_sink(m.sink);
  out->set_entropy(m.entropy);
  out->set_max(m.max);
}

}  // namespace

void FillModelInfo(const session::LoadedModel& model, v1::ModelInfo* info) {
  const ModelConfig& c = model.config;
  info->set_name(model.name);
  info->set_architecture(c.architecture);
  info->set_model_type(c.model_type);
  info->set_num_layers(c.num_hidden_layers);
  info->set_num_attention_heads(c.num_attention_heads);
  info->set_num_key_value_heads(c.num_key_value_heads);
  info->set_head_dim(c.head_dim);
  info->set_hidden_size(c.hidden_size);
  info->set_vocab_size(c.vocab_size);
  info->set_max_position_embeddings(c.max_position_embeddings);
  info->set_device(model.engine->options().device);
  info->set_run_dtype(DTypeName(model.engine->options().dtype));
  info->set_bos_token_id(c.bos_token_id);
  for (int64_t id : c.eos_token_ids) info->add_eos_token_ids(id);
  info->set_has_tokenizer(model.tokenizer != nullptr);
  info->set_has_chat_template(model.has_chat_template());
  info->set_config_sha256(c.config_hash);
  info->set_query_heads_per_kv_head(
      c.num_key_value_heads > 0 ? c.num_attention_heads / c.num_key_value_heads : 1);
}

v1::GenerateResponse MakeHeader(const session::PreparedGeneration& p,
                                const session::LoadedModel& model, const std::string& request_id,
                                uint64_t max_chunk_bytes, double queue_seconds) {
  v1::GenerateResponse message;
  v1::Header* header = message.mutable_header();
  header->set_request_id(request_id);
  for (int64_t id : p.prompt.ids) header->add_prompt_ids(id);
  for (const std::string& token : p.prompt.tokens) header->add_prompt_tokens(token);
  for (const auto& [begin, end] : p.prompt.spans) {
    v1::TokenSpan* span = header->add_prompt_spans();
    span->set_start(static_cast<int32_t>(begin));
    span->set_end(static_cast<int32_t>(end));
  }
  header->set_prompt_text(p.prompt.text);
  header->set_template_date(p.prompt.template_date);
  FillModelInfo(model, header->mutable_model());
  v1::ResolvedCapture* capture = header->mutable_capture();
  for (int layer : p.capture.layers) capture->add_layers(layer);
  for (int head : p.capture.heads) capture->add_heads(head);
  capture->set_dtype(session::ToWireDType(p.capture.dtype));
  capture->set_rows(session::ToWireRows(p.capture.rows));
  header->set_estimated_capture_bytes(p.estimated_capture_bytes);
  header->set_max_chunk_bytes(max_chunk_bytes);
  header->set_queue_seconds(queue_seconds);
  header->set_max_new_tokens(p.max_new_tokens);
  InterventionsToWire(p.interventions.items, header->mutable_interventions());
  return message;
}

v1::GenerateResponse MakeFinal(const session::CaptureOutcome& outcome, double queue_seconds,
                               double total_seconds, const StreamTotals& totals) {
  v1::GenerateResponse message;
  v1::Final* final = message.mutable_final();
  const GenerationResult& result = outcome.result;
  for (size_t i = result.prompt_length; i < result.token_ids.size(); ++i) {
    final->add_generated_ids(result.token_ids[i]);
  }
  final->set_generated_text(outcome.generated_text);
  final->set_stop_reason(result.stop_reason);
  final->set_prompt_tokens(result.prompt_length);
  final->set_generated_tokens(final->generated_ids_size());
  FillTimings(result, queue_seconds, total_seconds, final->mutable_timings());
  final->set_total_chunks(totals.chunks);
  final->set_total_attention_bytes(totals.attention_bytes);
  final->set_data_crc32(totals.data_crc32);
  return message;
}

v1::AnalyzeResponse MakeAnalyzeResponse(const session::AnalysisOutcome& outcome,
                                        const std::string& request_id, double queue_seconds,
                                        double total_seconds,
                                        const session::PreparedAnalysis& prepared) {
  const analysis::HeadReport& report = outcome.report;
  const GenerationResult& result = outcome.result;
  v1::AnalyzeResponse reply;
  reply.set_request_id(request_id);
  reply.set_report_json(analysis::ReportToJson(report).dump());
  for (const analysis::LayerReport& layer : report.layers) {
    v1::LayerSummary* summary = reply.add_layers();
    summary->set_layer(layer.layer);
    summary->set_num_heads(layer.stats.num_heads);
    summary->set_seq_length(layer.stats.seq_length);
    summary->set_mean_attention(layer.stats.mean_attention);
    summary->set_max_attention(layer.stats.max_attention);
    summary->set_attention_entropy(layer.stats.attention_entropy);
    for (const analysis::HeadEntry& head : layer.heads) {
      v1::HeadSummary* row = reply.add_heads();
      row->set_layer(layer.layer);
      row->set_head(head.head);
      FillHeadMetrics(head.metrics, row->mutable_all_rows());
      if (head.generated_rows) {
        FillHeadMetrics(*head.generated_rows, row->mutable_generated_rows());
      }
      row->set_type(head.metrics.type);
    }
  }
  for (int64_t id : result.token_ids) reply.add_token_ids(id);
  reply.set_prompt_length(result.prompt_length);
  reply.set_generated_text(outcome.generated_text);
  reply.set_stop_reason(result.stop_reason);
  InterventionsToWire(prepared.interventions.items, reply.mutable_interventions());
  FillTimings(result, queue_seconds, total_seconds, reply.mutable_timings());
  return reply;
}

v1::ScoreResponse MakeScoreResponse(const session::PreparedScore& prepared,
                                    const SweepResult& outcome, const std::string& request_id,
                                    double queue_seconds, double model_seconds,
                                    double total_seconds) {
  v1::ScoreResponse message;
  v1::ScoreResult* reply = message.mutable_result();
  reply->set_request_id(request_id);
  for (int64_t id : prepared.prompt.ids) reply->add_prompt_ids(id);
  InterventionsToWire(prepared.interventions.items, reply->mutable_interventions());
  ScoreResultToWire(outcome.clean, reply);
  if (prepared.sweep_mode) SweepCellsToWire(outcome.cells, reply);
  v1::Timings* timings = reply->mutable_timings();
  timings->set_queue_seconds(queue_seconds);
  timings->set_prefill_seconds(model_seconds);
  timings->set_total_seconds(total_seconds);
  return message;
}

}  // namespace attnscope::service
