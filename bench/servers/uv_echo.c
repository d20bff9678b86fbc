/*
 * The libuv echo server: one uv_loop_t, one buffer per connection handed out by the alloc
 * callback, and each read written back at once with uv_try_write. Only when the kernel does not
 * take it all (large messages) is the rest queued with uv_write, reading paused until it is
 * flushed, so the buffer is never reused under a pending write and nothing is allocated per
 * message.
 *
 *   uv_echo [IP:PORT | unix:PATH] [--buffer BYTES]
 *
 * Prints `listening on ENDPOINT (libuv)` first; accepted TCP sockets get TCP_NODELAY; stops when
 * stdin reaches EOF (or a line arrives) and on SIGTERM/SIGINT. Debian's libuv1-dev.
 */
#include <uv.h>

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_write_t write_req;
    size_t size;
    char buf[];
};

static size_t buffer_size = 1024;
static int is_unix;
static uv_loop_t *loop;

static void usage(void) {
    fprintf(stderr, "usage: uv_echo [IP:PORT | unix:PATH] [--buffer BYTES]\n");
    exit(2);
}

static void on_close(uv_handle_t *handle) { free(handle); /* the handle is the conn's first member */ }

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    struct conn *c = (struct conn *)handle;
    buf->base = c->buf;
    buf->len = c->size;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
    struct conn *c = (struct conn *)req->handle;
    if (status < 0 || uv_read_start(&c->h.stream, on_alloc, on_read) < 0) uv_close(&c->h.handle, on_close);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    struct conn *c = (struct conn *)stream;
    if (nread < 0) {
        uv_close(&c->h.handle, on_close);
        return;
    }
    if (nread == 0) return; /* EAGAIN */
    uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
    int written = uv_try_write(stream, &out, 1);
    if (written == nread) return;
    if (written < 0 && written != UV_EAGAIN) {
        uv_close(&c->h.handle, on_close);
        return;
    }
    if (written > 0) out = uv_buf_init(buf->base + written, (unsigned)(nread - written));
    uv_read_stop(stream);
    if (uv_write(&c->write_req, stream, &out, 1, on_written) < 0) uv_close(&c->h.handle, on_close);
}

static void on_connection(uv_stream_t *server, int status) {
    if (status < 0) return;
    struct conn *c = malloc(sizeof *c + buffer_size);
    if (!c) return;
    c->size = buffer_size;
    if (is_unix)
        uv_pipe_init(loop, &c->h.pipe, 0);
    else
        uv_tcp_init(loop, &c->h.tcp);
    if (uv_accept(server, &c->h.stream) < 0) {
        uv_close(&c->h.handle, on_close);
        return;
    }
    if (!is_unix) uv_tcp_nodelay(&c->h.tcp, 1);
    if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0) uv_close(&c->h.handle, on_close);
}

static char stdin_buf[256];
static void on_stdin_alloc(uv_handle_t *h, size_t s, uv_buf_t *buf) {
    (void)h, (void)s;
    *buf = uv_buf_init(stdin_buf, sizeof stdin_buf);
}
static void on_stdin(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    (void)s, (void)buf;
    if (nread != 0) uv_stop(loop); /* a line, EOF or an error */
}
static void on_signal(uv_signal_t *h, int sig) {
    (void)h, (void)sig;
    uv_stop(loop);
}

int main(int argc, char **argv) {
    const char *endpoint = "127.0.0.1:8080";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--buffer") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v == 0 || v > (16ul << 20)) usage();
            buffer_size = v;
        } else if (argv[i][0] == '-') {
            usage();
        } else {
            endpoint = argv[i];
        }
    }
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();

    uv_tcp_t tcp_server;
    uv_pipe_t pipe_server;
    uv_stream_t *server;
    char shown[256];
    const char *unix_path = NULL;
    int r;
    if (strncmp(endpoint, "unix:", 5) == 0) {
        is_unix = 1;
        unix_path = endpoint + 5;
        unlink(unix_path);
        uv_pipe_init(loop, &pipe_server, 0);
        r = uv_pipe_bind(&pipe_server, unix_path);
        server = (uv_stream_t *)&pipe_server;
        snprintf(shown, sizeof shown, "unix:%s", unix_path);
    } else {
        char host[64];
        const char *colon = strrchr(endpoint, ':');
        if (!colon || (size_t)(colon - endpoint) >= sizeof host) usage();
        memcpy(host, endpoint, (size_t)(colon - endpoint));
        host[colon - endpoint] = 0;
        struct sockaddr_in addr;
        if (uv_ip4_addr(host, atoi(colon + 1), &addr) < 0) usage();
        uv_tcp_init(loop, &tcp_server);
        r = uv_tcp_bind(&tcp_server, (const struct sockaddr *)&addr, 0);
        server = (uv_stream_t *)&tcp_server;
        struct sockaddr_in bound;
        int len = sizeof bound;
        if (r == 0) r = uv_tcp_getsockname(&tcp_server, (struct sockaddr *)&bound, &len);
        snprintf(shown, sizeof shown, "%s:%u", host, r == 0 ? ntohs(bound.sin_port) : 0);
    }
    if (r == 0) r = uv_listen(server, SOMAXCONN, on_connection);
    if (r < 0) {
        fprintf(stderr, "uv_echo: cannot listen on %s: %s\n", endpoint, uv_strerror(r));
        return 1;
    }

    uv_pipe_t in;
    uv_handle_type t = uv_guess_handle(0);
    if (t == UV_NAMED_PIPE || t == UV_TTY) {
        uv_pipe_init(loop, &in, 0);
        if (uv_pipe_open(&in, 0) == 0) uv_read_start((uv_stream_t *)&in, on_stdin_alloc, on_stdin);
    }
    uv_signal_t term, intr;
    uv_signal_init(loop, &term);
    uv_signal_start(&term, on_signal, SIGTERM);
    uv_signal_init(loop, &intr);
    uv_signal_start(&intr, on_signal, SIGINT);

    printf("listening on %s (libuv)\n", shown);
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    if (unix_path) unlink(unix_path);
    return 0;
}
