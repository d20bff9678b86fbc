// The Boost.Asio echo server: one io_context run by one thread (concurrency hint 1), sessions kept
// alive by the shared_ptr their handlers hold, async_read_some then async_write of what was read.
//
//   asio_echo [IP:PORT | unix:PATH] [--buffer BYTES]
//
// Prints `listening on ENDPOINT (asio)` first; accepted TCP sockets get TCP_NODELAY; stops when
// stdin reaches EOF (or a line arrives) and on SIGTERM/SIGINT. Header-only Boost (libboost-dev).
#include <boost/asio.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace asio = boost::asio;
using boost::system::error_code;

template <class Protocol>
class Session : public std::enable_shared_from_this<Session<Protocol>> {
  public:
    Session(typename Protocol::socket socket, std::size_t buffer)
        : socket_(std::move(socket)), buffer_(buffer) {}

    void read() {
        auto self = this->shared_from_this();
        socket_.async_read_some(asio::buffer(buffer_), [this, self](error_code ec, std::size_t n) {
            if (!ec) write(n);
        });
    }

  private:
    void write(std::size_t n) {
        auto self = this->shared_from_this();
        asio::async_write(socket_, asio::buffer(buffer_.data(), n),
                          [this, self](error_code ec, std::size_t) {
                              if (!ec) read();
                          });
    }

    typename Protocol::socket socket_;
    std::vector<char> buffer_;
};

template <class Protocol>
void accept(typename Protocol::acceptor &acceptor, std::size_t buffer) {
    acceptor.async_accept([&acceptor, buffer](error_code ec, typename Protocol::socket socket) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec) {
            if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) {
                socket.set_option(asio::ip::tcp::no_delay(true), ec);
            }
            std::make_shared<Session<Protocol>>(std::move(socket), buffer)->read();
        }
        accept<Protocol>(acceptor, buffer);
    });
}

static void usage() {
    std::fprintf(stderr, "usage: asio_echo [IP:PORT | unix:PATH] [--buffer BYTES]\n");
    std::exit(2);
}

int main(int argc, char **argv) {
    std::string endpoint = "127.0.0.1:8080";
    std::size_t buffer = 1024;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--buffer") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = std::strtoul(argv[++i], &end, 10);
            if (*end || v == 0 || v > (16ul << 20)) usage();
            buffer = v;
        } else if (argv[i][0] == '-') {
            usage();
        } else {
            endpoint = argv[i];
        }
    }

    asio::io_context io(1);

    // stdin: a pipe or terminal is watched (readable at EOF or on a line); anything else is not.
    struct stat st;
    asio::posix::stream_descriptor in(io);
    if (fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(0))) {
        in.assign(::dup(0));
        in.async_wait(asio::posix::descriptor_base::wait_read, [&io](error_code) { io.stop(); });
    }
    asio::signal_set signals(io, SIGTERM, SIGINT);
    signals.async_wait([&io](error_code, int) { io.stop(); });

    try {
        if (endpoint.rfind("unix:", 0) == 0) {
            std::string path = endpoint.substr(5);
            ::unlink(path.c_str());
            asio::local::stream_protocol::acceptor acceptor(io, asio::local::stream_protocol::endpoint(path));
            std::printf("listening on unix:%s (asio)\n", path.c_str());
            std::fflush(stdout);
            accept<asio::local::stream_protocol>(acceptor, buffer);
            io.run();
            ::unlink(path.c_str());
        } else {
            auto colon = endpoint.rfind(':');
            if (colon == std::string::npos) usage();
            std::string host = endpoint.substr(0, colon);
            if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
            auto port = static_cast<unsigned short>(std::atoi(endpoint.c_str() + colon + 1));
            asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address(host), port));
            auto local = acceptor.local_endpoint();
            std::printf("listening on %s:%u (asio)\n", local.address().to_string().c_str(), local.port());
            std::fflush(stdout);
            accept<asio::ip::tcp>(acceptor, buffer);
            io.run();
        }
    } catch (std::exception &e) {
        std::fprintf(stderr, "asio_echo: %s\n", e.what());
        return 1;
    }
    return 0;
}
