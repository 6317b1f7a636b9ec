#include "server/service/service.h"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/service/attention_chunker.h"
#include "server/service/prep_pool.h"
#include "server/service/response_stream.h"
#include "server/service/score_stream.h"
#include "server/service/status_util.h"
#include "server/service/wire_messages.h"
#include "server/session/request_proto.h"
#include "server/session/score_request_proto.h"
#include "server/tokenizer/incremental_decoder.h"

namespace attnscope::service {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

// After a request that left more than kTrimThresholdBytes free in malloc's arenas (a long
// capture, a big report), give them back to the system: glibc keeps freed memory otherwise,
// and RSS stayed at 1-4 GB after bursts.
constexpr size_t kTrimThresholdBytes = 256u << 20;
void ReturnFreeMemory() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 info = mallinfo2();
  if (info.fordblks > kTrimThresholdBytes) malloc_trim(0);
#endif
}

// debug.exception_injection (the reliability suite's only way to reach the exception paths):
// the point a request names in its `attnscope-debug-throw` header ("prepare", "engine",
// "reply") throws there. Empty when the flag is off or the header absent.
std::string InjectedExceptionPoint(grpc::CallbackServerContext* context, bool enabled) {
  if (!enabled) return "";
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("attnscope-debug-throw");
  return it == metadata.end() ? "" : std::string(it->second.data(), it->second.size());
}
void MaybeThrowInjected(const std::string& requested, const char* here) {
  if (requested == here) {
    throw std::runtime_error(
        absl::StrCat("exception injected at '", here, "' (debug.exception_injection)"));
  }
}

// An engine job whose exception ends its call through `fail` (INTERNAL, logged by CatchAll)
// instead of terminating the server from the engine's thread.
template <typename Job, typename Fail>
std::function<void()> CatchingJob(const char* method, Job job, Fail fail) {
  return [method, job = std::move(job), fail = std::move(fail)]() mutable {
    const grpc::Status failed = CatchAll(absl::StrCat(method, " (running the model)"), job);
    if (!failed.ok()) fail(failed);
  };
}

// The request's log line and bookkeeping; logged once, when the last holder lets go (after
// both the RPC and the engine work have ended).
struct RequestRecord {
  Admission admission;
  std::string method;
  std::string client_tag;
  int input_tokens = 0;
  int generated_tokens = 0;
  uint64_t attention_bytes = 0;
  double queue_seconds = 0;
  grpc::Status status;

  ~RequestRecord() {
    // Client-supplied text is quoted and C-escaped: a newline in client_tag cannot forge a
    // log line.
    spdlog::info(
        "request id={} method={} key={} tag=\"{}\" input_tokens={} generated_tokens={} "
        "attention_bytes={} queue_wait_ms={:.1f} duration_ms={:.1f} status={}{}{}{}",
        admission.request_id, method, admission.key_name, absl::CEscape(client_tag), input_tokens,
        generated_tokens, attention_bytes, queue_seconds * 1e3,
        SecondsSince(admission.arrival) * 1e3, StatusCodeName(status.error_code()),
        status.ok() ? "" : " message=\"", status.ok() ? "" : absl::CEscape(status.error_message()),
        status.ok() ? "" : "\"");
    ReturnFreeMemory();
  }
};

absl::Status DeadlineCheck(std::chrono::system_clock::time_point deadline) {
  if (std::chrono::system_clock::now() > deadline) {
    return absl::DeadlineExceededError("the request's deadline passed during generation");
  }
  return absl::OkStatus();
}

// GenerateWithAttention's sink: token events and attention chunks into the stream.
class StreamObserver : public GenerationObserver {
 public:
  StreamObserver(ResponseStream* stream, AttentionChunker* chunker, const Tokenizer* tokenizer,
                 std::chrono::system_clock::time_point deadline)
      : stream_(stream),
        chunker_(chunker),
        tokenizer_(tokenizer),
        decoder_(tokenizer),
        deadline_(deadline) {}

  absl::Status OnAttention(const AttentionBlock& block) override { return chunker_->Add(block); }
  bool accepts_wire_rows() const override { return true; }

  absl::Status OnToken(int64_t token_id, int position) override {
    ++generated_;
    v1::GenerateResponse response;
    v1::TokenEvent* token = response.mutable_token();
    token->set_id(token_id);
    token->set_position(position);
    token->set_text(decoder_.Next(token_id));
    if (tokenizer_ != nullptr) token->set_token(tokenizer_->TokenString(token_id));
    return stream_->Push(std::move(response));
  }

  absl::Status CheckContinue() override {
    ATTNSCOPE_RETURN_IF_ERROR(stream_->CheckOpen());
    return DeadlineCheck(deadline_);
  }

  int generated() const { return generated_; }

 private:
  ResponseStream* stream_;
  AttentionChunker* chunker_;
  const Tokenizer* tokenizer_;
  IncrementalDecoder decoder_;
  std::chrono::system_clock::time_point deadline_;
  int generated_ = 0;
};

class GenerateReactor;

// Everything a GenerateWithAttention call owns; shared by the reactor and the engine job.
struct GenerateCall {
  std::shared_ptr<RequestRecord> record;
  std::shared_ptr<ResponseStream> stream;
  session::PreparedGeneration prepared;
  std::chrono::system_clock::time_point deadline;
};

class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(std::shared_ptr<RequestRecord> record, grpc::CallbackServerContext* context)
      : record_(std::move(record)), context_(context) {}

  // Valid until OnDone, which cannot come while the stream is cancelling (see ResponseStream).
  void CancelFromServer() { context_->TryCancel(); }

  void Start(std::shared_ptr<ResponseStream> stream) { stream_ = std::move(stream); }
  void FinishNow(const grpc::Status& status) {
    record_->status = status;
    Finish(status);
  }

  void OnWriteDone(bool ok) override { stream_->OnWriteDone(ok); }
  void OnCancel() override {
    if (stream_) stream_->OnCancel();
  }
  void OnDone() override {
    if (stream_) {
      record_->status = stream_->final_status();
    }
    delete this;
  }

 private:
  std::shared_ptr<RequestRecord> record_;
  grpc::CallbackServerContext* context_;
  std::shared_ptr<ResponseStream> stream_;
};

// A unary call whose Finish may come from the engine job or from OnCancel, whichever is first.
// The job holds only the shared state: once OnCancel finished the call, the reactor may be
// gone, and the job must neither touch it nor write the response.
class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  struct State {
    std::mutex mutex;
    bool finished = false;
    UnaryCall* reactor = nullptr;  // alive until Finish: OnDone cannot come before it
    std::shared_ptr<RequestRecord> record;
    std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  };

  explicit UnaryCall(std::shared_ptr<RequestRecord> record) {
    state_->reactor = this;
    state_->record = std::move(record);
  }

  // Finishes the call unless it already is; `write_response` runs only if it is not.
  static bool FinishOnce(const std::shared_ptr<State>& state, const grpc::Status& status,
                         const std::function<void()>& write_response) {
    UnaryCall* reactor = nullptr;
    std::shared_ptr<RequestRecord> record;
    grpc::Status final_status = status;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      if (state->finished) return false;
      state->finished = true;
      if (write_response) {
        grpc::Status written = CatchAll("writing the reply", write_response);
        if (!written.ok()) final_status = written;
      }
      reactor = state->reactor;
      // The call's slots (in flight, its key's concurrency) end with its reply, not at
      // OnDone, which gRPC may run much later while its callback threads parse other
      // requests: a client that sends its next request on the reply must find its slot free.
      // Work still running (an engine or preparation job) holds its own reference.
      record = std::move(state->record);
    }
    // A call that ends because its work is done gives its key's slot back before the reply
    // leaves, not when the last holder of the record lets go (the handler or job that
    // finished it is still unwinding). One ended by a cancellation or a drain keeps the slot
    // until its work stops.
    if (!state->cancelled->load()) record->admission.lease = KeyLease();
    record->status = final_status;
    reactor->Finish(final_status);
    return true;
  }
  bool FinishOnce(const grpc::Status& status, const std::function<void()>& write_response) {
    return FinishOnce(state_, status, write_response);
  }
  std::shared_ptr<State> state() const { return state_; }

  void OnCancel() override {
    state_->cancelled->store(true);
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"), nullptr);
  }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

std::string MakeRequestIdPrefix() {
  std::random_device device;
  char buffer[16];
  std::snprintf(buffer, sizeof(buffer), "%06x", device() & 0xFFFFFF);
  return buffer;
}

// The key a refusal names (the per-key limit's message carries it), for the log line.
std::string RefusedKeyName(const absl::Status& refusal) {
  constexpr absl::string_view kPrefix = "API key '";
  const absl::string_view message = refusal.message();
  if (absl::StartsWith(message, kPrefix)) {
    const size_t end = message.find('\'', kPrefix.size());
    if (end != absl::string_view::npos) {
      return std::string(message.substr(kPrefix.size(), end - kPrefix.size()));
    }
  }
  return refusal.code() == absl::StatusCode::kUnauthenticated ? "(unauthenticated)" : "-";
}

// Records a unary call's admission (key, per-key limit, draining), or finishes the call with
// the refusal and returns false.
bool AdmitOrFinish(absl::StatusOr<Admission> admission, RequestRecord& record, UnaryCall* reactor) {
  if (!admission.ok()) {
    record.admission.arrival = Clock::now();
    record.admission.request_id = "-";
    record.admission.key_name = RefusedKeyName(admission.status());
    reactor->FinishOnce(ToGrpcStatus(admission.status()), nullptr);
    return false;
  }
  record.admission = *std::move(admission);
  return true;
}

// A drain ends the unary call through its shared state (InFlightToken::SetEnd).
void EndOnDrain(RequestRecord& record, const std::shared_ptr<UnaryCall::State>& state) {
  // Weak: the state holds the record, which holds this hook's token.
  record.admission.in_flight->SetEnd(
      [weak = std::weak_ptr<UnaryCall::State>(state)](const grpc::Status& status) {
        if (std::shared_ptr<UnaryCall::State> state = weak.lock()) {
          state->cancelled->store(true);
          UnaryCall::FinishOnce(state, status, nullptr);
        }
      });
}

}  // namespace

AttnScopeService::AttnScopeService(ServerConfig config, ApiKeyTable keys)
    : config_(std::move(config)),
      keys_(std::move(keys)),
      request_id_prefix_(MakeRequestIdPrefix()),
      worker_(std::make_unique<EngineWorker>(config_.queue_length, config_.concurrent_generations)),
      prep_(MakePreparationPool(config_.queue_length, config_.concurrent_generations)) {}

AttnScopeService::~AttnScopeService() {
  prep_.reset();  // its queued jobs may still submit to the engine's queue
  worker_.reset();
}

void AttnScopeService::BeginDrain() {
  draining_.store(true);
  in_flight_.EndQueued(ToGrpcStatus(absl::UnavailableError(
      "the server is shutting down (draining): the request was still waiting for the engine; "
      "retry elsewhere")));
}

int AttnScopeService::EndInFlightAfterGrace() {
  return in_flight_.EndAll(ToGrpcStatus(absl::UnavailableError(absl::StrCat(
      "the server shut down: the request was still running when drain_grace_seconds = ",
      config_.drain_grace_seconds, " expired; retry elsewhere"))));
}

void AttnScopeService::SetModel(std::unique_ptr<session::LoadedModel> model) {
  model_ = std::move(model);
  model_ready_.store(true);
}

absl::StatusOr<Admission> AttnScopeService::Admit(grpc::CallbackServerContext* context) {
  Admission admission;
  admission.arrival = Clock::now();
  admission.request_id = absl::StrCat(request_id_prefix_, "-", next_request_number_.fetch_add(1));
  admission.key_name = "anonymous";
  // The headers' size as HPACK counts it (32 bytes per entry). gRPC's own limit, beyond
  // which it drops the whole connection, is set above this one (server.cc), so a call whose
  // headers are merely too large fails alone.
  const auto& metadata = context->client_metadata();
  size_t metadata_bytes = 0;
  for (const auto& [name, value] : metadata) metadata_bytes += name.size() + value.size() + 32;
  const size_t max_metadata = static_cast<size_t>(config_.connections.max_metadata_bytes);
  if (metadata_bytes > max_metadata) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request headers = ", metadata_bytes,
        " bytes: exceed the server limit connections.max_metadata_bytes = ", max_metadata));
  }
  if (keys_.enabled()) {
    auto it = metadata.find("authorization");
    std::string_view value;
    if (it != metadata.end()) value = std::string_view(it->second.data(), it->second.size());
    absl::StatusOr<const ApiKey*> key = keys_.Authenticate(it == metadata.end() ? nullptr : &value);
    if (!key.ok()) {
      // At most one line a second: a client looping bad keys must not flood the log.
      const int64_t now_s =
          std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
      int64_t last = last_unauthenticated_log_s_.load();
      if (now_s != last && last_unauthenticated_log_s_.compare_exchange_strong(last, now_s)) {
        spdlog::warn(
            "request id={} rejected: {} ({} more unauthenticated requests since the "
            "last such line)",
            admission.request_id, std::string(key.status().message()),
            unauthenticated_suppressed_.exchange(0));
      } else {
        unauthenticated_suppressed_.fetch_add(1);
      }
      return key.status();
    }
    admission.key_name = (*key)->name;
    absl::StatusOr<KeyLease> lease = keys_.Acquire(**key);
    if (!lease.ok()) return lease.status();
    admission.lease = *std::move(lease);
  }
  if (draining_.load()) {
    return absl::UnavailableError("the server is shutting down (draining); retry elsewhere");
  }
  if (!model_ready_.load()) {
    return absl::UnavailableError("the model is still loading; retry when health is SERVING");
  }
  admission.in_flight = in_flight_.Add();
  return admission;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* AttnScopeService::GenerateWithAttention(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  absl::StatusOr<Admission> admission = Admit(context);
  auto record = std::make_shared<RequestRecord>();
  record->method = "GenerateWithAttention";
  record->client_tag = request->client_tag().substr(0, 128);
  auto* reactor = new GenerateReactor(record, context);
  if (!admission.ok()) {
    record->admission.arrival = Clock::now();
    record->admission.request_id = "-";
    record->admission.key_name = RefusedKeyName(admission.status());
    reactor->FinishNow(ToGrpcStatus(admission.status()));
    return reactor;
  }
  record->admission = *std::move(admission);

  auto call = std::make_shared<GenerateCall>();
  call->record = record;
  call->deadline = context->deadline();
  call->stream = std::make_shared<ResponseStream>(
      config_.streaming.stream_queue_bytes,
      std::chrono::milliseconds(
          static_cast<int64_t>(config_.streaming.stall_timeout_seconds * 1000)),
      [reactor](const v1::GenerateResponse* message) { reactor->StartWrite(message); },
      [reactor](const grpc::Status& status) { reactor->Finish(status); },
      [reactor] { reactor->CancelFromServer(); });
  reactor->Start(call->stream);
  record->admission.in_flight->SetEnd(
      [stream = call->stream](const grpc::Status& status) { stream->Close(status); });

  const session::LoadedModel* model = model_.get();
  const uint64_t max_chunk_bytes = config_.streaming.max_message_bytes;
  auto engine_job = [call, model, max_chunk_bytes] {
    RequestRecord& rec = *call->record;
    rec.queue_seconds = SecondsSince(rec.admission.arrival);
    rec.admission.in_flight->MarkStarted();
    ResponseStream& stream = *call->stream;
    if (!stream.CheckOpen().ok()) return;  // cancelled or drained while waiting
    const session::PreparedGeneration& p = call->prepared;

    v1::GenerateResponse header_message =
        MakeHeader(p, *model, rec.admission.request_id, max_chunk_bytes, rec.queue_seconds);
    if (!stream.Push(std::move(header_message)).ok()) return;

    AttentionChunker chunker(p.capture, static_cast<int>(p.prompt.ids.size()), max_chunk_bytes,
                             [&stream](v1::AttentionChunk&& chunk) {
                               v1::GenerateResponse message;
                               *message.mutable_chunk() = std::move(chunk);
                               return stream.Push(std::move(message));
                             });
    StreamObserver observer(&stream, &chunker, model->tokenizer.get(), call->deadline);
    absl::StatusOr<session::CaptureOutcome> outcome = session::RunCapture(*model, p, &observer);
    rec.generated_tokens = observer.generated();
    absl::Status status = outcome.status();
    if (status.ok()) status = chunker.Flush();
    rec.attention_bytes = chunker.bytes_sent();
    if (!status.ok()) {
      stream.Close(ToGrpcStatus(status));
      return;
    }
    rec.generated_tokens =
        static_cast<int>(outcome->result.token_ids.size()) - outcome->result.prompt_length;
    v1::GenerateResponse final_message =
        MakeFinal(*outcome, rec.queue_seconds, SecondsSince(rec.admission.arrival),
                  {chunker.chunks_sent(), chunker.bytes_sent(), chunker.data_crc32()});
    if (!stream.Push(std::move(final_message)).ok()) return;
    stream.Close(grpc::Status::OK);
  };
  // Conversion, validation, tokenization and chat rendering, off gRPC's callback threads.
  absl::Status queued = SubmitPreparation(
      *prep_, "GenerateWithAttention",
      [this, call, engine_job = std::move(engine_job), owned = TakeRequest(request)]() mutable {
        if (!call->stream->CheckOpen().ok()) return;  // cancelled or drained while waiting
        absl::StatusOr<session::Request> converted = session::FromProto(*owned);
        absl::StatusOr<session::PreparedGeneration> prepared =
            converted.ok() ? session::PrepareGeneration(*converted, *model_, config_.limits)
                           : absl::StatusOr<session::PreparedGeneration>(converted.status());
        if (!prepared.ok()) {
          call->stream->Close(ToGrpcStatus(prepared.status()));
          return;
        }
        call->prepared = *std::move(prepared);
        call->record->input_tokens = static_cast<int>(call->prepared.prompt.ids.size());
        absl::Status submitted = worker_->Submit(
            CatchingJob("GenerateWithAttention", std::move(engine_job),
                        [call](const grpc::Status& status) { call->stream->Close(status); }));
        if (!submitted.ok()) call->stream->Close(ToGrpcStatus(submitted));
      },
      [call](const grpc::Status& status) { call->stream->Close(status); });
  if (!queued.ok()) call->stream->Close(ToGrpcStatus(queued));
  return reactor;
}

grpc::ServerUnaryReactor* AttnScopeService::AnalyzeHeads(grpc::CallbackServerContext* context,
                                                         const v1::AnalyzeRequest* request,
                                                         v1::AnalyzeResponse* response) {
  auto record = std::make_shared<RequestRecord>();
  record->method = "AnalyzeHeads";
  record->client_tag = request->client_tag().substr(0, 128);
  auto* reactor = new UnaryCall(record);
  if (!AdmitOrFinish(Admit(context), *record, reactor)) return reactor;
  const session::LoadedModel* model = model_.get();
  const auto deadline = context->deadline();
  auto state = reactor->state();
  EndOnDrain(*record, state);
  auto shared_prepared = std::make_shared<session::PreparedAnalysis>();
  const std::string inject = InjectedExceptionPoint(context, config_.debug.exception_injection);
  auto engine_job = [state, record, model, deadline, response, inject,
                     max_reply_bytes = config_.limits.max_reply_bytes, shared_prepared]() {
    MaybeThrowInjected(inject, "engine");
    const session::PreparedAnalysis& prepared = *shared_prepared;
    record->queue_seconds = SecondsSince(record->admission.arrival);
    record->admission.in_flight->MarkStarted();
    if (state->cancelled->load()) return;
    absl::StatusOr<session::AnalysisOutcome> outcome =
        session::RunAnalysis(*model, prepared, [&state, deadline]() -> absl::Status {
          if (state->cancelled->load()) return absl::CancelledError("cancelled by the client");
          return DeadlineCheck(deadline);
        });
    if (!outcome.ok()) {
      UnaryCall::FinishOnce(state, ToGrpcStatus(outcome.status()), nullptr);
      return;
    }
    record->generated_tokens = outcome->generated_tokens;
    v1::AnalyzeResponse reply =
        MakeAnalyzeResponse(*outcome, record->admission.request_id, record->queue_seconds,
                            SecondsSince(record->admission.arrival), prepared);
    const uint64_t reply_bytes = reply.ByteSizeLong();
    if (reply_bytes > max_reply_bytes) {
      UnaryCall::FinishOnce(
          state,
          ToGrpcStatus(absl::ResourceExhaustedError(absl::StrCat(
              "the AnalyzeHeads reply is ", reply_bytes,
              " bytes, over the server limit limits.max_reply_bytes = ", max_reply_bytes,
              "; ask for fewer analysis.layers / analysis.heads or no "
              "include_term_submatrix"))),
          nullptr);
      return;
    }
    UnaryCall::FinishOnce(state, grpc::Status::OK, [&] { *response = std::move(reply); });
  };
  // Everything is checked there, off gRPC's callback threads, before the request joins the
  // engine's queue.
  absl::Status queued = SubmitPreparation(
      *prep_, "AnalyzeHeads",
      [this, state, record, shared_prepared, engine_job = std::move(engine_job), inject,
       owned = TakeRequest(request)]() mutable {
        if (state->cancelled->load()) return;
        MaybeThrowInjected(inject, "prepare");
        absl::StatusOr<session::Request> converted = session::FromProto(*owned);
        absl::StatusOr<session::PreparedAnalysis> prepared =
            converted.ok() ? session::PrepareAnalysis(*converted, *model_, config_.limits)
                           : absl::StatusOr<session::PreparedAnalysis>(converted.status());
        if (!prepared.ok()) {
          UnaryCall::FinishOnce(state, ToGrpcStatus(prepared.status()), nullptr);
          return;
        }
        record->input_tokens = static_cast<int>(prepared->prompt.ids.size());
        *shared_prepared = *std::move(prepared);
        absl::Status submitted = worker_->Submit(
            CatchingJob("AnalyzeHeads", std::move(engine_job), [state](const grpc::Status& status) {
              UnaryCall::FinishOnce(state, status, nullptr);
            }));
        if (!submitted.ok()) UnaryCall::FinishOnce(state, ToGrpcStatus(submitted), nullptr);
      },
      [state](const grpc::Status& status) { UnaryCall::FinishOnce(state, status, nullptr); });
  if (!queued.ok()) reactor->FinishOnce(ToGrpcStatus(queued), nullptr);
  return reactor;
}

grpc::ServerUnaryReactor* AttnScopeService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*,
                                                         v1::GetModelInfoResponse* response) {
  auto record = std::make_shared<RequestRecord>();
  record->method = "GetModelInfo";
  auto* reactor = new UnaryCall(record);
  if (!AdmitOrFinish(Admit(context), *record, reactor)) return reactor;
  const std::string inject = InjectedExceptionPoint(context, config_.debug.exception_injection);
  reactor->FinishOnce(grpc::Status::OK, [&] {
    MaybeThrowInjected(inject, "reply");
    FillModelInfo(*model_, response->mutable_model());
    v1::ServerLimits* limits = response->mutable_limits();
    limits->set_max_prompt_tokens(config_.limits.max_prompt_tokens);
    limits->set_max_new_tokens(config_.limits.max_new_tokens);
    limits->set_max_total_tokens(config_.limits.max_total_tokens);
    limits->set_max_capture_bytes(config_.limits.max_capture_bytes);
    limits->set_max_chunk_bytes(config_.streaming.max_message_bytes);
    limits->set_queue_length(config_.queue_length);
    limits->set_default_max_new_tokens(config_.limits.default_max_new_tokens);
    limits->set_max_interventions(config_.limits.max_interventions);
    limits->set_max_candidates(config_.limits.max_candidates);
    limits->set_max_candidate_tokens(config_.limits.max_candidate_tokens);
    limits->set_max_sweep_heads(config_.limits.max_sweep_heads);
    response->set_server_version("attnscope 0.1.0");
  });
  return reactor;
}

grpc::ServerUnaryReactor* AttnScopeService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  auto record = std::make_shared<RequestRecord>();
  record->method = "Tokenize";
  auto* reactor = new UnaryCall(record);
  if (!AdmitOrFinish(Admit(context), *record, reactor)) return reactor;
  auto state = reactor->state();
  EndOnDrain(*record, state);
  // Tokenization and chat rendering run off gRPC's callback threads.
  absl::Status queued = SubmitPreparation(
      *prep_, "Tokenize",
      [this, state, record, response, owned = TakeRequest(request),
       inject = InjectedExceptionPoint(context, config_.debug.exception_injection)] {
        if (state->cancelled->load()) return;
        MaybeThrowInjected(inject, "prepare");
        const session::LoadedModel& model = *model_;
        absl::StatusOr<session::Request> converted = session::FromProto(*owned);
        const absl::Status sizes = converted.ok()
                                       ? session::CheckRequestSizes(*converted, config_.limits)
                                       : converted.status();
        absl::StatusOr<PreparedPrompt> input =
            sizes.ok() ? session::ResolvePromptInput(converted->input, model)
                       : absl::StatusOr<PreparedPrompt>(sizes);
        if (!input.ok()) {
          UnaryCall::FinishOnce(state, ToGrpcStatus(input.status()), nullptr);
          return;
        }
        if (static_cast<int>(input->ids.size()) > config_.limits.max_prompt_tokens) {
          UnaryCall::FinishOnce(
              state,
              ToGrpcStatus(session::CheckTokenLimits(static_cast<int>(input->ids.size()), 0,
                                                     model.config, config_.limits)),
              nullptr);
          return;
        }
        record->input_tokens = static_cast<int>(input->ids.size());
        UnaryCall::FinishOnce(state, grpc::Status::OK, [&] {
          for (int64_t id : input->ids) response->add_ids(id);
          for (const std::string& token : input->tokens) response->add_tokens(token);
          for (const auto& [begin, end] : input->spans) {
            v1::TokenSpan* span = response->add_spans();
            span->set_start(static_cast<int32_t>(begin));
            span->set_end(static_cast<int32_t>(end));
          }
          if (owned->input_case() == v1::TokenizeRequest::kIds) {
            if (model.tokenizer != nullptr) response->set_text(model.tokenizer->Decode(input->ids));
          } else {
            response->set_text(input->text);
          }
        });
      },
      [state](const grpc::Status& status) { UnaryCall::FinishOnce(state, status, nullptr); });
  if (!queued.ok()) reactor->FinishOnce(ToGrpcStatus(queued), nullptr);
  return reactor;
}

grpc::ServerWriteReactor<v1::ScoreResponse>* AttnScopeService::ScoreAnswers(
    grpc::CallbackServerContext* context, const v1::ScoreRequest* request) {
  auto record = std::make_shared<RequestRecord>();
  record->method = "ScoreAnswers";
  record->client_tag = request->client_tag().substr(0, 128);
  auto* reactor =
      new ScoreReactor([record](const grpc::Status& status) { record->status = status; });
  auto state = reactor->state();
  absl::StatusOr<Admission> admission = Admit(context);
  if (!admission.ok()) {
    record->admission.arrival = Clock::now();
    record->admission.request_id = "-";
    record->admission.key_name = RefusedKeyName(admission.status());
    ScoreReactor::Close(state, ToGrpcStatus(admission.status()));
    return reactor;
  }
  record->admission = *std::move(admission);
  const session::LoadedModel* model = model_.get();
  const auto deadline = context->deadline();
  const InterventionLimits limits = session::InterventionLimitsOf(config_.limits);
  auto shared_prepared = std::make_shared<session::PreparedScore>();
  auto engine_job = [state, record, model, deadline, limits, shared_prepared] {
    const session::PreparedScore& p = *shared_prepared;
    record->queue_seconds = SecondsSince(record->admission.arrival);
    if (state->cancelled.load()) return;
    const auto model_start = Clock::now();
    // Sweeps only: progress after each batch of ablated forwards.
    auto progress = [&](int done, int total) -> absl::Status {
      if (state->cancelled.load()) return absl::CancelledError("cancelled by the client");
      ATTNSCOPE_RETURN_IF_ERROR(DeadlineCheck(deadline));
      v1::ScoreResponse update;
      update.mutable_progress()->set_done(done);
      update.mutable_progress()->set_total(total);
      ScoreReactor::Push(state, std::move(update));
      return absl::OkStatus();
    };
    absl::StatusOr<SweepResult> outcome = session::RunScore(*model, p, progress, limits);
    if (!outcome.ok()) {
      ScoreReactor::Close(state, ToGrpcStatus(outcome.status()));
      return;
    }
    ScoreReactor::Push(state, MakeScoreResponse(p, *outcome, record->admission.request_id,
                                                record->queue_seconds, SecondsSince(model_start),
                                                SecondsSince(record->admission.arrival)));
    ScoreReactor::Close(state, grpc::Status::OK);
  };
  // Everything is checked there, off gRPC's callback threads, before the request joins the
  // engine's queue.
  absl::Status queued = SubmitPreparation(
      *prep_, "ScoreAnswers",
      [this, state, record, shared_prepared, engine_job = std::move(engine_job),
       owned = TakeRequest(request)]() mutable {
        if (state->cancelled.load()) return;
        absl::StatusOr<session::PreparedScore> prepared =
            session::PrepareScore(*owned, *model_, config_.limits);
        if (!prepared.ok()) {
          ScoreReactor::Close(state, ToGrpcStatus(prepared.status()));
          return;
        }
        record->input_tokens = static_cast<int>(prepared->prompt.ids.size());
        *shared_prepared = *std::move(prepared);
        absl::Status submitted = worker_->Submit(CatchingJob(
            "ScoreAnswers", std::move(engine_job),
            [state](const grpc::Status& status) { ScoreReactor::Close(state, status); }));
        if (!submitted.ok()) ScoreReactor::Close(state, ToGrpcStatus(submitted));
      },
      [state](const grpc::Status& status) { ScoreReactor::Close(state, status); });
  if (!queued.ok()) ScoreReactor::Close(state, ToGrpcStatus(queued));
  return reactor;
}

}  // namespace attnscope::service
