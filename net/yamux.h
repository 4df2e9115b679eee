/* yamux.h - yamux stream multiplexer (hashicorp/yamux spec.md; libp2p id "/yamux/1.0.0").
 *
 * A state machine without I/O: feed received bytes to yamux_input(), poll events with
 * yamux_next_event(), read stream data with yamux_stream_read(), send yamux_output().
 * Frames: 12-byte header (version 0, type, flags, stream id, length; big endian); types Data,
 * Window Update, Ping, Go Away; flags SYN, ACK, FIN, RST. Initial window 256 KiB each way;
 * our receive window is re-granted only as the application reads, so a peer can never make
 * us buffer more than max_streams * 256 KiB. Stream ids: odd for the client (dialer), even for
 * the server. Any protocol violation queues Go Away (protocol error) and kills the session.
 * Not thread-safe: one owner (the host's loop thread).
 */
#ifndef MESH_NET_YAMUX_H
#define MESH_NET_YAMUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define YAMUX_MSS_ID "/yamux/1.0.0"
#define YAMUX_HEADER_LEN 12
#define YAMUX_INITIAL_WINDOW (256u * 1024u)
#define YAMUX_MAX_FRAME_PAYLOAD (16u * 1024u) /* data frames we send */

enum { YAMUX_TYPE_DATA = 0, YAMUX_TYPE_WINDOW_UPDATE = 1, YAMUX_TYPE_PING = 2,
       YAMUX_TYPE_GO_AWAY = 3 };
enum { YAMUX_FLAG_SYN = 1, YAMUX_FLAG_ACK = 2, YAMUX_FLAG_FIN = 4, YAMUX_FLAG_RST = 8 };
enum { YAMUX_GOAWAY_NORMAL = 0, YAMUX_GOAWAY_PROTOCOL = 1, YAMUX_GOAWAY_INTERNAL = 2 };

enum yamux_event_type {
    YAMUX_EV_OPEN = 1, /* the peer opened stream_id */
    YAMUX_EV_ACK,      /* the peer accepted our stream_id */
    YAMUX_EV_DATA,     /* stream_id has bytes to read */
    YAMUX_EV_FIN,      /* the peer will send no more on stream_id */
    YAMUX_EV_RESET,    /* stream_id was reset by the peer; it is gone */
    YAMUX_EV_WINDOW,   /* stream_id may accept more writes */
    YAMUX_EV_PING,     /* our ping with opaque value came back */
    YAMUX_EV_GOAWAY,   /* the peer will accept no new streams; value = code */
};

struct yamux_event {
    enum yamux_event_type type;
    uint32_t stream_id;
    uint32_t value;
};

struct yamux_config {
    uint32_t max_streams;      /* open streams at once (both directions); default 64 */
    size_t max_output;         /* unsent bytes before control replies count as abuse; 4 MiB */
};

struct yamux;

/* Creates a session; cfg may be NULL for defaults. Returns 0 or MESH_ENOMEM. */
int yamux_new(bool is_client, const struct yamux_config *cfg, struct yamux **out);
void yamux_free(struct yamux *y);

/* Feeds received bytes (all are consumed unless an error is returned). Returns 0,
 * MESH_EPROTO (violation: Go Away queued, session dead) or MESH_ENOMEM. */
int yamux_input(struct yamux *y, const uint8_t *data, size_t len);

/* Pops the next event; returns 1 if *ev was filled, 0 if none. */
int yamux_next_event(struct yamux *y, struct yamux_event *ev);

/* Bytes to send; after sending n of them call yamux_output_consume(n). */
void yamux_output(const struct yamux *y, const uint8_t **data, size_t *len);
void yamux_output_consume(struct yamux *y, size_t n);

/* Opens a stream (queues a Window Update with SYN). Returns 0, MESH_EFULL (max_streams),
 * MESH_ECLOSED (session dead or peer sent Go Away). */
int yamux_stream_open(struct yamux *y, uint32_t *id);

/* Queues up to len bytes as Data frames, limited by the peer's window; *written says how
 * many. Returns 0 (possibly *written < len: wait for YAMUX_EV_WINDOW), MESH_ENOTFOUND,
 * MESH_ECLOSED (we closed or it was reset). */
int yamux_stream_write(struct yamux *y, uint32_t id, const uint8_t *data, size_t len,
                       size_t *written);

/* Copies up to cap buffered bytes into buf and re-grants window as needed. *n = 0 with
 * return 0 means nothing buffered now; MESH_ECLOSED: nothing buffered and the peer sent FIN.
 * MESH_ENOTFOUND: no such stream. */
int yamux_stream_read(struct yamux *y, uint32_t id, uint8_t *buf, size_t cap, size_t *n);

/* Bytes buffered for reading on a stream (0 if unknown). */
size_t yamux_stream_readable(const struct yamux *y, uint32_t id);

/* Half-closes our side (FIN). The stream is forgotten once both sides closed and its data
 * was read. Returns 0, MESH_ENOTFOUND. */
int yamux_stream_close(struct yamux *y, uint32_t id);

/* Resets the stream (RST) and forgets it. Returns 0 or MESH_ENOTFOUND. */
int yamux_stream_reset(struct yamux *y, uint32_t id);

/* Per-stream owner pointer for the host. */
int yamux_stream_set_user(struct yamux *y, uint32_t id, void *user);
void *yamux_stream_user(const struct yamux *y, uint32_t id);

/* Bytes the peer currently lets us send on the stream (0 if unknown). */
uint32_t yamux_stream_send_window(const struct yamux *y, uint32_t id);

/* Sends a ping with an opaque value (answered by YAMUX_EV_PING). */
int yamux_ping(struct yamux *y, uint32_t value);

/* Queues Go Away with code; no new streams either way after it. */
int yamux_go_away(struct yamux *y, uint32_t code);

/* Number of open streams; true once the session is unusable (error or Go Away both ways). */
size_t yamux_n_streams(const struct yamux *y);
bool yamux_is_dead(const struct yamux *y);

#endif
