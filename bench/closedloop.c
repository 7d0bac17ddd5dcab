/*
 * The closed loop of bench/loadgen.py in C, for machines where the generator shares the CPUs
 * with the servers it measures (the workers mode on 2 CPUs): a few microseconds of CPU per
 * message instead of about thirty in Python, so the generator takes less from the servers.
 *
 * bench/loadgen.py compiles it on first use (cc -O2), connects and logs in the terminals itself,
 * and hands over the connected sockets (inherited descriptors) together with a plan file.
 * Plan (native byte order):  u32 connections; per connection: u32 descriptor, u32 position,
 * u32 frames; per
 * frame: u32 length, the bytes, 2 bytes of expected reply code, i32 index of the ok flag (0: none).
 * Result file: u64 measured_ns, wrong, refused, lost, count; u32 position per connection;
 * count x u64 latency in ns. Every loop is bounded by the deadline; replies still in flight at
 * the end are drained (for at most 10 s) so the connections are clean for the next run.
 *
 *   closedloop PLAN RESULT SECONDS WARMUP
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint32_t len;
    char *data;
    char code[2];
    int32_t ok_index;
} frame_t;

typedef struct {
    int fd;
    uint32_t pos, nframes;
    frame_t *frames;
    int busy;
    uint64_t sent;
    char buf[65536];
    size_t have;
} conn_t;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void must_read(FILE *f, void *p, size_t n) {
    if (n && fread(p, 1, n, f) != n) {
        fprintf(stderr, "closedloop: short plan file\n");
        exit(2);
    }
}

static uint64_t *lat;
static size_t nlat, caplat;
static uint64_t wrong, refused, lost;

static void send_next(conn_t *c) {
    if (c->fd < 0) return;
    frame_t *f = &c->frames[c->pos];
    c->busy = 1;
    c->sent = now_ns();
    if (send(c->fd, f->data, f->len, MSG_NOSIGNAL) < 0) {
        c->busy = 0;
        lost++;
        close(c->fd);
        c->fd = -1;
    }
}

/* 1 when a whole reply (ending in CR) arrived; records it when measuring. */
static int receive(conn_t *c, int measuring, uint64_t now) {
    ssize_t n = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n <= 0 || c->have + (size_t)n >= sizeof c->buf) {
        c->busy = 0;
        if (measuring) lost++;
        close(c->fd);
        c->fd = -1;
        return 0;
    }
    c->have += (size_t)n;
    if (c->buf[c->have - 1] != '\r') return 0;
    frame_t *f = &c->frames[c->pos];
    c->pos = (c->pos + 1) % c->nframes;
    c->busy = 0;
    if (measuring) {
        if (nlat == caplat) {
            caplat = caplat ? caplat * 2 : 1 << 16;
            lat = realloc(lat, caplat * sizeof *lat);
            if (!lat) exit(3);
        }
        lat[nlat++] = now - c->sent;
        if (c->have < 2 || memcmp(c->buf, f->code, 2) != 0)
            wrong++;
        else if (f->ok_index && ((size_t)f->ok_index >= c->have || c->buf[f->ok_index] != '1'))
            refused++;
    }
    c->have = 0;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: closedloop PLAN RESULT SECONDS WARMUP\n");
        return 2;
    }
    FILE *plan = fopen(argv[1], "rb");
    if (!plan) { perror(argv[1]); return 2; }
    uint32_t n;
    must_read(plan, &n, 4);
    conn_t *conns = calloc(n, sizeof *conns);
    for (uint32_t i = 0; i < n; i++) {
        conn_t *c = &conns[i];
        uint32_t fd;
        must_read(plan, &fd, 4);
        c->fd = (int)fd;
        must_read(plan, &c->pos, 4);
        must_read(plan, &c->nframes, 4);
        c->frames = calloc(c->nframes, sizeof *c->frames);
        for (uint32_t j = 0; j < c->nframes; j++) {
            frame_t *f = &c->frames[j];
            must_read(plan, &f->len, 4);
            f->data = malloc(f->len);
            must_read(plan, f->data, f->len);
            must_read(plan, f->code, 2);
            must_read(plan, &f->ok_index, 4);
        }
    }
    fclose(plan);

    int ep = epoll_create1(0);
    for (uint32_t i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) { perror("epoll_ctl"); return 2; }
    }
    uint64_t warm = (uint64_t)(atof(argv[4]) * 1e9), span = (uint64_t)(atof(argv[3]) * 1e9);
    for (uint32_t i = 0; i < n; i++) send_next(&conns[i]);
    uint64_t start = now_ns() + warm, end = start + span, now = 0;
    int measuring = 0;
    struct epoll_event events[1024];
    for (;;) {
        int k = epoll_wait(ep, events, 1024, 1000);
        now = now_ns();
        if (now >= end) break;
        if (!measuring && now >= start) { measuring = 1; start = now; }
        for (int e = 0; e < k; e++) {
            conn_t *c = &conns[events[e].data.u32];
            if (c->fd >= 0 && receive(c, measuring, now_ns())) send_next(c);
        }
    }
    uint64_t measured = measuring ? now - start : 0;
    uint64_t drain_end = now_ns() + 10000000000ull;
    for (;;) {
        int busy = 0;
        for (uint32_t i = 0; i < n; i++) busy |= conns[i].busy && conns[i].fd >= 0;
        if (!busy || now_ns() >= drain_end) break;
        int k = epoll_wait(ep, events, 1024, 500);
        for (int e = 0; e < k; e++) {
            conn_t *c = &conns[events[e].data.u32];
            if (c->fd >= 0 && c->busy) receive(c, 0, 0);
        }
    }

    FILE *out = fopen(argv[2], "wb");
    if (!out) { perror(argv[2]); return 2; }
    uint64_t head[5] = {measured, wrong, refused, lost, nlat};
    fwrite(head, sizeof head, 1, out);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pos = conns[i].fd >= 0 ? conns[i].pos : UINT32_MAX;
        fwrite(&pos, 4, 1, out);
    }
    if (nlat) fwrite(lat, sizeof *lat, nlat, out);
    fclose(out);
    return 0;
}
