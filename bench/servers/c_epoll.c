/*
 * The floor: a hand-written, single-threaded epoll echo server in C.
 *
 *   c_epoll [ENDPOINT] [--buffer BYTES]
 *
 * ENDPOINT is IP:PORT (IPv4), or unix:PATH; default 127.0.0.1:8080, port 0 picks a free port.
 * Prints `listening on ENDPOINT (epoll)` first, stops on stdin EOF (or a line) and on SIGTERM/SIGINT.
 *
 * Accepted TCP sockets get TCP_NODELAY, as in every server of the benchmark.
 *
 * Level-triggered: one read per readiness event and one write of what was read, so an echoed message
 * costs read + write plus a share of epoll_wait, the least a readiness loop can do. Each connection
 * owns one buffer, allocated when it is accepted; nothing is allocated per message. A write that the
 * kernel takes only in part (large messages) parks the rest, watches EPOLLOUT instead of EPOLLIN, and
 * goes back to reading once it is flushed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_EVENTS 1024

struct conn {
    int fd;
    size_t pending;  /* bytes read but not yet written back */
    size_t offset;   /* where in buf the unwritten bytes start */
    char buf[];
};

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }

/* Tags in epoll_event.data.ptr that are not connections. */
static char listener_tag, stdin_tag;

static void usage(void) {
    fprintf(stderr, "usage: c_epoll [IP:PORT | unix:PATH] [--buffer BYTES]\n");
    exit(2);
}

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Writes what is pending; returns -1 when the connection must close, 0 otherwise. Switches the
 * interest to EPOLLOUT when the kernel did not take everything, back to EPOLLIN when flushed. */
static int flush(int ep, struct conn *c, int watching_out) {
    while (c->pending > 0) {
        ssize_t n = write(c->fd, c->buf + c->offset, c->pending);
        if (n > 0) {
            c->offset += (size_t)n;
            c->pending -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            if (!watching_out) {
                struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) return -1;
            }
            return 0;
        } else {
            return -1;
        }
    }
    if (watching_out) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *endpoint = "127.0.0.1:8080";
    size_t buffer = 1024;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--buffer") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v == 0 || v > (16ul << 20)) usage();
            buffer = v;
        } else if (argv[i][0] == '-') {
            usage();
        } else {
            endpoint = argv[i];
        }
    }

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd;
    char shown[256];
    const char *unix_path = NULL;
    if (strncmp(endpoint, "unix:", 5) == 0) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        unix_path = endpoint + 5;
        if (strlen(unix_path) >= sizeof sun.sun_path) usage();
        strcpy(sun.sun_path, unix_path);
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        unlink(unix_path);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, sizeof sun) < 0) {
            perror("c_epoll: bind");
            return 1;
        }
        snprintf(shown, sizeof shown, "unix:%s", unix_path);
    } else {
        char host[64];
        const char *colon = strrchr(endpoint, ':');
        if (!colon || (size_t)(colon - endpoint) >= sizeof host) usage();
        memcpy(host, endpoint, (size_t)(colon - endpoint));
        host[colon - endpoint] = 0;
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
        if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) usage();
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0) {
            perror("c_epoll: bind");
            return 1;
        }
        socklen_t len = sizeof sin;
        getsockname(lfd, (struct sockaddr *)&sin, &len);
        snprintf(shown, sizeof shown, "%s:%u", host, ntohs(sin.sin_port));
    }
    if (listen(lfd, SOMAXCONN) < 0) {
        perror("c_epoll: listen");
        return 1;
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &stdin_tag;
    /* A pipe or terminal can be watched; /dev/null or a file cannot (EPERM): then only signals stop. */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);

    printf("listening on %s (epoll)\n", shown);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("c_epoll: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &stdin_tag) {
                stop_requested = 1;
            } else if (tag == &listener_tag) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break; /* EAGAIN, or EMFILE: level-triggered, retried next turn */
                    struct conn *c = malloc(sizeof *c + buffer);
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    if (!unix_path) {
                        int one = 1; /* as every server here: no Nagle delay on echoed tails */
                        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    }
                    c->fd = fd;
                    c->pending = c->offset = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0) {
                        close(fd);
                        free(c);
                    }
                }
            } else {
                struct conn *c = tag;
                if (c->pending > 0) { /* EPOLLOUT (or an error) while a write was parked */
                    if (flush(ep, c, 1) < 0) close_conn(ep, c);
                    continue;
                }
                ssize_t r = read(c->fd, c->buf, buffer);
                if (r > 0) {
                    /* The common case: the kernel takes it all at once. */
                    ssize_t w = write(c->fd, c->buf, (size_t)r);
                    if (w == r) continue;
                    if (w < 0 && errno != EAGAIN && errno != EINTR) {
                        close_conn(ep, c);
                        continue;
                    }
                    c->offset = w > 0 ? (size_t)w : 0;
                    c->pending = (size_t)r - c->offset;
                    if (flush(ep, c, 0) < 0) close_conn(ep, c);
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    close_conn(ep, c);
                }
            }
        }
    }
    if (unix_path) unlink(unix_path);
    return 0;
}
