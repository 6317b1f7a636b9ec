#include "client/cpp/view_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cpp/view_page.h"

namespace attnscope::cli {
namespace {

// A request head larger than this is refused (the viewer's requests are a few hundred bytes).
constexpr size_t kMaxRequestBytes = 16 * 1024;

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

struct Reply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::map<std::string, std::string> headers;
  std::string body;
};

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 403:
      return "Forbidden";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Error";
  }
}

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::map<std::string, std::string> QueryParameters(const std::string& query) {
  std::map<std::string, std::string> out;
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    out[kv.first] = kv.second;
  }
  return out;
}

Reply HeadReply(const MappedCapture& capture, const std::string& query) {
  auto params = QueryParameters(query);
  HeadRef ref;
  Reply reply;
  reply.status = 400;
  if (!absl::SimpleAtoi(params["layer"], &ref.layer)) {
    reply.body = absl::StrCat("layer: '", params["layer"], "' is not an integer");
    return reply;
  }
  if (params["head"] == "mean") {
    ref.head = kLayerMean;
  } else if (!absl::SimpleAtoi(params["head"], &ref.head) || ref.head < 0) {
    reply.body = absl::StrCat("head: '", params["head"], "' is not a head index or 'mean'");
    return reply;
  }
  std::string dtype;
  auto bytes = LowerTriangleBytes(capture, ref, &dtype);
  if (!bytes.ok()) {
    reply.status = 404;
    reply.body = std::string(bytes.status().message());
    return reply;
  }
  reply.status = 200;
  reply.content_type = "application/octet-stream";
  reply.headers["X-Attnscope-Dtype"] = dtype;
  reply.body = std::move(*bytes);
  return reply;
}

// The Host header's value ("" when absent), lower-cased.
std::string HostHeader(const std::string& head) {
  for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
    if (line.size() > 5 && absl::AsciiStrToLower(line.substr(0, 5)) == "host:") {
      return absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(5)));
    }
  }
  return "";
}

Reply Route(const MappedCapture& capture, const std::string& page, const std::string& head,
            int port) {
  Reply reply;
  // Only pages addressed to this loopback server by name or number: a web page elsewhere that
  // rebinds its own host name to 127.0.0.1 must not read the capture.
  const std::string host = HostHeader(head);
  if (host != absl::StrCat("127.0.0.1:", port) && host != absl::StrCat("localhost:", port)) {
    reply.status = 403;
    reply.body = absl::StrCat("Host '", host, "' is not 127.0.0.1:", port, " or localhost:", port);
    return reply;
  }
  const size_t line_end = head.find("\r\n");
  std::vector<std::string> parts = absl::StrSplit(head.substr(0, line_end), ' ');
  if (parts.size() != 3 || parts[2].rfind("HTTP/1.", 0) != 0) {
    reply.status = 400;
    reply.body = "malformed request line";
    return reply;
  }
  if (parts[0] != "GET") {
    reply.status = 405;
    reply.body = absl::StrCat("method ", parts[0], " not allowed (GET only)");
    return reply;
  }
  const std::string& target = parts[1];
  const size_t question = target.find('?');
  const std::string path = target.substr(0, question);
  const std::string query = question == std::string::npos ? "" : target.substr(question + 1);
  if (path == "/" || path == "/index.html") {
    reply.content_type = "text/html; charset=utf-8";
    reply.body = page;
    return reply;
  }
  if (path == "/api/head") return HeadReply(capture, query);
  reply.status = 404;
  reply.body = absl::StrCat("no such path: ", path);
  return reply;
}

void Answer(int fd, const MappedCapture& capture, const std::string& page, int port) {
  std::string head;
  char buffer[4096];
  while (head.find("\r\n\r\n") == std::string::npos) {
    if (head.size() > kMaxRequestBytes) {
      Reply reply;
      reply.status = 431;
      reply.body = absl::StrCat("request head over ", kMaxRequestBytes, " bytes");
      SendAll(fd, absl::StrCat("HTTP/1.1 431 ", Reason(431), "\r\nContent-Length: ",
                               reply.body.size(), "\r\nConnection: close\r\n\r\n", reply.body));
      return;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) return;  // a silent client does not hold the server
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    head.append(buffer, static_cast<size_t>(n));
  }
  Reply reply = Route(capture, page, head, port);
  std::string out = absl::StrCat("HTTP/1.1 ", reply.status, " ", Reason(reply.status),
                                 "\r\nContent-Type: ", reply.content_type,
                                 "\r\nContent-Length: ", reply.body.size(),
                                 "\r\nCache-Control: no-store\r\nConnection: close\r\n");
  for (const auto& [name, value] : reply.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  out += "\r\n";
  if (SendAll(fd, out)) SendAll(fd, reply.body);
}

}  // namespace

absl::Status ServeView(const MappedCapture& capture, const std::string& page, int port) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listener, 16) != 0) {
    const std::string error = std::strerror(errno);
    close(listener);
    return absl::UnavailableError(
        absl::StrCat("--port ", port, ": cannot listen on 127.0.0.1: ", error));
  }
  socklen_t length = sizeof(address);
  getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::cout << "serving http://127.0.0.1:" << ntohs(address.sin_port) << "/ (Ctrl-C stops)"
            << std::endl;
  while (!g_stop) {
    pollfd p{listener, POLLIN, 0};
    const int ready = poll(&p, 1, 250);
    if (ready <= 0) continue;
    const int fd = accept(listener, nullptr, nullptr);
    if (fd < 0) continue;
    Answer(fd, capture, page, ntohs(address.sin_port));
    close(fd);
  }
  close(listener);
  return absl::OkStatus();
}

}  // namespace attnscope::cli
