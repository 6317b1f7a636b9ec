// The one place where a session::Request meets attnscope.v1: the command line's remote mode
// converts its Request to the proto, the service converts the proto back. Built only with gRPC.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "attnscope/v1/attnscope.pb.h"
#include "server/capture/capture_spec.h"
#include "server/session/request.h"

namespace attnscope::session {

v1::GenerateRequest ToGenerateRequest(const Request& request);
v1::AnalyzeRequest ToAnalyzeRequest(const Request& request);
// Input only (text, messages or ids, plain_text).
v1::TokenizeRequest ToTokenizeRequest(const Request& request);

// Unknown enum values are INVALID_ARGUMENT naming the field (capture.dtype = 9: ...).
absl::StatusOr<Request> FromProto(const v1::GenerateRequest& request);
absl::StatusOr<Request> FromProto(const v1::AnalyzeRequest& request);
absl::StatusOr<Request> FromProto(const v1::TokenizeRequest& request);
// ScoreAnswers: the input, interventions and patch source (candidates and sweep are read by
// ScoreSpecFromProto, score_request_proto.h); InputToScoreRequest writes the same fields.
absl::StatusOr<Request> FromProto(const v1::ScoreRequest& request);
void InputToScoreRequest(const Request& request, v1::ScoreRequest* proto);

v1::DType ToWireDType(DType dtype);
v1::RowSelection ToWireRows(CaptureRows rows);
// UNSPECIFIED is float32. `field` names the value in the error of an unknown one.
absl::StatusOr<DType> FromWireDType(int dtype, const std::string& field);
absl::StatusOr<CaptureRows> FromWireRows(int rows, const std::string& field);

}  // namespace attnscope::session
