#include "client/cpp/remote/remote_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "attnscope/v1/attnscope.grpc.pb.h"
#include "server/capture/crc32.h"
#include "server/session/request_proto.h"

namespace attnscope::remote {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status Broken(const std::string& message) {
  return absl::DataLossError(absl::StrCat("incomplete or corrupt stream: ", message));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--tls-ca: cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const RemoteTarget& target) {
  if (target.address.empty()) return absl::InvalidArgumentError("--server: empty address");
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (target.tls || !target.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions options;
    if (!target.tls_ca_file.empty()) {
      absl::StatusOr<std::string> roots = ReadFile(target.tls_ca_file);
      if (!roots.ok()) return roots.status();
      options.pem_root_certs = *roots;
    }
    credentials = grpc::SslCredentials(options);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // chunk size is the server's choice (header says it)
  return grpc::CreateCustomChannel(target.address, credentials, args);
}

void PrepareContext(const RemoteTarget& target, grpc::ClientContext* context) {
  if (!target.token.empty()) context->AddMetadata("authorization", "Bearer " + target.token);
  if (target.timeout_seconds > 0) {
    context->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(static_cast<int64_t>(target.timeout_seconds * 1000)));
  }
}

}  // namespace

absl::Status FromGrpcStatus(int code, const std::string& message, const std::string& address) {
  return absl::Status(static_cast<absl::StatusCode>(code),
                      absl::StrCat("server ", address, ": ", message));
}

absl::Status CaptureStreamReceiver::OnMessage(const v1::GenerateResponse& message) {
  if (final_) return Broken("a message arrived after Final");
  switch (message.event_case()) {
    case v1::GenerateResponse::kHeader: {
      if (header_) return Broken("a second Header");
      const v1::ResolvedCapture& capture = message.header().capture();
      CaptureSpec spec;
      spec.layers.assign(capture.layers().begin(), capture.layers().end());
      spec.heads.assign(capture.heads().begin(), capture.heads().end());
      absl::StatusOr<DType> dtype = session::FromWireDType(capture.dtype(), "header.capture.dtype");
      if (!dtype.ok()) return Broken(std::string(dtype.status().message()));
      spec.dtype = *dtype;
      absl::StatusOr<CaptureRows> rows =
          session::FromWireRows(capture.rows(), "header.capture.rows");
      if (!rows.ok()) return Broken(std::string(rows.status().message()));
      spec.rows = *rows;
      header_ = message.header();
      // The longest sequence the request can produce: the assembler preallocates for it (0 from a
      // server that does not say: it grows).
      const int max_tokens = header_->max_new_tokens() > 0
                                 ? header_->prompt_ids_size() + header_->max_new_tokens()
                                 : 0;
      assembler_.emplace(std::move(spec), max_tokens);
      return absl::OkStatus();
    }
    case v1::GenerateResponse::kToken: {
      if (!header_) return Broken("a TokenEvent before the Header");
      const int expected = header_->prompt_ids_size() + static_cast<int>(token_ids_.size());
      if (message.token().position() != expected) {
        return Broken(absl::StrCat("token at position ", message.token().position(), ", expected ",
                                   expected));
      }
      token_ids_.push_back(message.token().id());
      token_strings_.push_back(message.token().token());
      return absl::OkStatus();
    }
    case v1::GenerateResponse::kChunk:
      if (!header_) return Broken("an AttentionChunk before the Header");
      return AddChunk(message.chunk());
    case v1::GenerateResponse::kFinal:
      if (!header_) return Broken("Final before the Header");
      final_ = message.final();
      return absl::OkStatus();
    default:
      return Broken("an empty message");
  }
}

absl::Status CaptureStreamReceiver::AddChunk(const v1::AttentionChunk& chunk) {
  if (chunk.sequence_number() != next_sequence_) {
    return Broken(absl::StrCat("chunk sequence_number ", chunk.sequence_number(), ", expected ",
                               next_sequence_, " (a chunk was lost or reordered)"));
  }
  ++next_sequence_;
  const CaptureSpec& spec = assembler_->spec();
  absl::StatusOr<DType> chunk_dtype = session::FromWireDType(chunk.dtype(), "chunk.dtype");
  if (!chunk_dtype.ok() || *chunk_dtype != spec.dtype) {
    return Broken(absl::StrCat("chunk ", chunk.sequence_number(), " has dtype ",
                               static_cast<int>(chunk.dtype()), ", the header says ",
                               static_cast<int>(header_->capture().dtype())));
  }
  if (chunk.num_rows() < 1 || chunk.key_length() < 1 || chunk.first_row() < 0 ||
      chunk.key_length() != chunk.first_row() + chunk.num_rows()) {
    return Broken(absl::StrCat("chunk ", chunk.sequence_number(), " has rows [", chunk.first_row(),
                               ", +", chunk.num_rows(), ") and key_length ", chunk.key_length()));
  }
  const size_t dtype_size = DTypeSize(spec.dtype);
  const size_t expected_bytes =
      static_cast<size_t>(chunk.heads_size()) * chunk.num_rows() * chunk.key_length() * dtype_size;
  if (chunk.data().size() != expected_bytes || chunk.shape_size() != 3 ||
      chunk.shape(0) != chunk.heads_size() || chunk.shape(1) != chunk.num_rows() ||
      chunk.shape(2) != chunk.key_length()) {
    return Broken(absl::StrCat("chunk ", chunk.sequence_number(), " holds ", chunk.data().size(),
                               " bytes; its heads/rows/keys say ", expected_bytes));
  }
  bytes_ += chunk.data().size();
  crc32_ = Crc32(crc32_, chunk.data().data(), chunk.data().size());

  const bool all_heads = chunk.heads_size() == static_cast<int>(spec.heads.size()) &&
                         std::equal(chunk.heads().begin(), chunk.heads().end(), spec.heads.begin());
  if (all_heads) {
    return assembler_->AddBytes(chunk.layer(), chunk.first_row(), chunk.num_rows(),
                                chunk.key_length(), chunk.data().data(), chunk.data().size());
  }
  // A row split by heads: each group is copied into place; the row counts once all arrived.
  if (chunk.num_rows() != 1) {
    return Broken(absl::StrCat("chunk ", chunk.sequence_number(),
                               " carries a subset of heads for more than one row"));
  }
  const std::vector<int> heads(chunk.heads().begin(), chunk.heads().end());
  absl::Status placed =
      assembler_->AddHeadBytes(chunk.layer(), heads, chunk.first_row(), 1, chunk.key_length(),
                               chunk.data().data(), chunk.data().size());
  if (!placed.ok()) {
    return Broken(absl::StrCat("chunk ", chunk.sequence_number(), ": ", placed.message()));
  }
  return absl::OkStatus();
}

absl::Status CaptureStreamReceiver::Finish() const {
  if (!header_) return Broken("no Header");
  if (!final_) return Broken("no Final message (the stream ended early)");
  if (final_->total_chunks() != next_sequence_) {
    return Broken(
        absl::StrCat("received ", next_sequence_, " chunks, Final says ", final_->total_chunks()));
  }
  if (final_->total_attention_bytes() != bytes_) {
    return Broken(absl::StrCat("received ", bytes_, " attention bytes, Final says ",
                               final_->total_attention_bytes()));
  }
  if (final_->data_crc32() != crc32_) {
    return Broken(absl::StrFormat("CRC-32 of the chunk data is %08x, Final says %08x", crc32_,
                                  final_->data_crc32()));
  }
  for (int layer : assembler_->spec().layers) {
    if (assembler_->PartialRows(layer) > 0) {
      return Broken(absl::StrCat("layer ", layer, " has ", assembler_->PartialRows(layer),
                                 " rows split by heads that miss some heads"));
    }
  }
  if (static_cast<int>(token_ids_.size()) != final_->generated_ids_size() ||
      !std::equal(token_ids_.begin(), token_ids_.end(), final_->generated_ids().begin())) {
    return Broken("the TokenEvents differ from Final.generated_ids");
  }
  const int prompt = header_->prompt_ids_size();
  const int total = prompt + final_->generated_ids_size();
  const CaptureSpec& spec = assembler_->spec();
  const int expected = spec.rows == CaptureRows::kPromptOnly      ? prompt
                       : spec.rows == CaptureRows::kGeneratedOnly ? total - prompt
                                                                  : total;
  if (spec.enabled()) {
    for (int layer : spec.layers) {
      if (assembler_->RowsReceived(layer) != expected) {
        return Broken(absl::StrCat("layer ", layer, " has ", assembler_->RowsReceived(layer),
                                   " query rows, expected ", expected));
      }
    }
  }
  return absl::OkStatus();
}

std::vector<int64_t> CaptureStreamReceiver::AllTokenIds() const {
  std::vector<int64_t> ids(header_->prompt_ids().begin(), header_->prompt_ids().end());
  ids.insert(ids.end(), token_ids_.begin(), token_ids_.end());
  return ids;
}

CaptureMetadata CaptureStreamReceiver::Metadata() const {
  CaptureMetadata metadata;
  metadata.prompt_length = header_->prompt_ids_size();
  metadata.model = absl::StrCat(header_->model().name(), " ", header_->model().config_sha256());
  metadata.template_date = header_->template_date();
  if (final_) {
    metadata.stop_reason = final_->stop_reason();
    metadata.generated_text = final_->generated_text();
  }
  if (header_->model().has_tokenizer()) {
    metadata.tokens.assign(header_->prompt_tokens().begin(), header_->prompt_tokens().end());
    metadata.tokens.insert(metadata.tokens.end(), token_strings_.begin(), token_strings_.end());
  }
  return metadata;
}

absl::Status CaptureStreamReceiver::WriteFile(const std::string& path) const {
  absl::Status complete = Finish();
  if (!complete.ok()) return complete;
  return assembler_->Write(path, AllTokenIds(), Metadata(), nullptr, 0);
}

absl::StatusOr<RemoteCaptureSummary> RemoteCapture(const RemoteTarget& target,
                                                   const v1::GenerateRequest& request,
                                                   const std::string& out_path, bool progress) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(target);
  if (!channel.ok()) return channel.status();
  auto stub = v1::AttnScope::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(target, &context);
  const auto start = Clock::now();
  auto reader = stub->GenerateWithAttention(&context, request);
  CaptureStreamReceiver receiver;
  v1::GenerateResponse message;
  absl::Status receive_status;
  bool progress_shown = false;
  auto last_progress = start;
  while (reader->Read(&message)) {
    receive_status = receiver.OnMessage(message);
    if (!receive_status.ok()) {
      context.TryCancel();
      break;
    }
    const auto now = Clock::now();
    if (progress && now - start > std::chrono::seconds(1) &&
        now - last_progress > std::chrono::milliseconds(200)) {
      std::fprintf(stderr, "\r  %d tokens generated, %.1f MB received", receiver.generated_tokens(),
                   receiver.attention_bytes() / 1e6);
      progress_shown = true;
      last_progress = now;
    }
  }
  const grpc::Status status = reader->Finish();
  const double stream_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (progress_shown) {
    std::fprintf(stderr, "\r  %d tokens generated, %.1f MB received\n", receiver.generated_tokens(),
                 receiver.attention_bytes() / 1e6);
  }
  if (!receive_status.ok()) return receive_status;
  if (!status.ok()) {
    return FromGrpcStatus(status.error_code(), status.error_message(), target.address);
  }
  absl::Status written = receiver.WriteFile(out_path);
  if (!written.ok()) return written;
  RemoteCaptureSummary summary;
  summary.header = receiver.header();
  summary.final_message = receiver.final_message();
  summary.attention_bytes = receiver.attention_bytes();
  summary.stream_seconds = stream_seconds;
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return summary;
}

namespace {

template <typename Response, typename Call>
absl::StatusOr<Response> Unary(const RemoteTarget& target, Call call) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(target);
  if (!channel.ok()) return channel.status();
  auto stub = v1::AttnScope::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(target, &context);
  Response response;
  const grpc::Status status = call(stub.get(), &context, &response);
  if (!status.ok()) {
    return FromGrpcStatus(status.error_code(), status.error_message(), target.address);
  }
  return response;
}

}  // namespace

absl::StatusOr<v1::AnalyzeResponse> RemoteAnalyze(const RemoteTarget& target,
                                                  const v1::AnalyzeRequest& request) {
  return Unary<v1::AnalyzeResponse>(
      target,
      [&](v1::AttnScope::Stub* stub, grpc::ClientContext* context, v1::AnalyzeResponse* response) {
        return stub->AnalyzeHeads(context, request, response);
      });
}

absl::StatusOr<v1::TokenizeResponse> RemoteTokenize(const RemoteTarget& target,
                                                    const v1::TokenizeRequest& request) {
  return Unary<v1::TokenizeResponse>(
      target,
      [&](v1::AttnScope::Stub* stub, grpc::ClientContext* context, v1::TokenizeResponse* response) {
        return stub->Tokenize(context, request, response);
      });
}

absl::StatusOr<v1::GetModelInfoResponse> RemoteModelInfo(const RemoteTarget& target) {
  return Unary<v1::GetModelInfoResponse>(
      target, [&](v1::AttnScope::Stub* stub, grpc::ClientContext* context,
                  v1::GetModelInfoResponse* response) {
        return stub->GetModelInfo(context, v1::GetModelInfoRequest(), response);
      });
}

absl::StatusOr<v1::ScoreResult> RemoteScore(
    const RemoteTarget& target, const v1::ScoreRequest& request,
    const std::function<void(const v1::ScoreProgress&)>& progress) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(target);
  if (!channel.ok()) return channel.status();
  auto stub = v1::AttnScope::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(target, &context);
  std::unique_ptr<grpc::ClientReader<v1::ScoreResponse>> reader =
      stub->ScoreAnswers(&context, request);
  v1::ScoreResponse message;
  std::optional<v1::ScoreResult> result;
  absl::Status broken;
  while (reader->Read(&message)) {
    if (message.has_progress()) {
      if (progress) progress(message.progress());
    } else if (message.has_result() && !result && broken.ok()) {
      result = message.result();
    } else if (broken.ok()) {
      broken = absl::DataLossError(absl::StrCat("server ", target.address,
                                                ": ScoreAnswers stream broken: an empty message "
                                                "or a second result"));
    }
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return FromGrpcStatus(status.error_code(), status.error_message(), target.address);
  }
  if (!broken.ok()) return broken;
  if (!result) {
    return absl::DataLossError(
        absl::StrCat("server ", target.address, ": ScoreAnswers ended without a result"));
  }
  return *result;
}

}  // namespace attnscope::remote
