// The one place that maps absl::Status to grpc::Status (the codes share their numbering).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace attnscope::service {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace attnscope::service

#define ATTNSCOPE_RETURN_IF_ERROR(expr)  \
  do {                                   \
    const absl::Status status_ = (expr); \
    if (!status_.ok()) return status_;   \
  } while (0)
