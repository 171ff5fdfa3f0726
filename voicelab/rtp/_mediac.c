/* Optional native media engine of voicelab.rtp (see voicelab/rtp/native.py).
 *
 * One native thread per engine plays the steady state of G.711 echo streams: at each
 * playout slot it sends the datagram built in the previous slot, reads the stream's
 * socket (kernel receive timestamps), plays the next packet of the sequence if it is
 * there in time, and builds the next echo datagram from it with the stream's own G.711
 * tables. It never touches a Python object. Whatever it cannot decide alone (a missing,
 * late, reordered or foreign packet, a payload of another size, a send that would block)
 * makes it stop serving the stream ("bail") and leave that slot to Python.
 *
 * Queue mode (add(..., txq=[datagrams], send_t0, send_k, tx_end)): for streams whose
 * outgoing frames do not depend on what arrives (a prompt, silence), Python queues the
 * datagrams to send (feed() tops the queue up); the thread sends one per send slot
 * (send_t0 + (k + 1) * frame) and plays the arriving packets without building anything.
 * An empty queue at a send slot (unless tx_end said the last one was queued) or a send
 * that would block bails with ("b", next playout slot, 2): Python arms that slot.
 *
 * Everything it did is logged, in order, per stream: each datagram read (with its
 * arrival time), each send, each slot played (with the datagram built for the next
 * slot), the bail. Python replays the log through the stream's own objects (RTP session,
 * jitter buffer, decoder, packetizer) in batches, so the stream's state, statistics and
 * recordings are those of the pure-Python path by construction, and it checks that each
 * datagram the thread built is the one Python builds (voicelab/rtp/native.py).
 *
 *   Engine(ulaw_dec, ulaw_enc16, alaw_dec, alaw_enc16)  tables as bytes (int16 LE x 256,
 *                                                       uint8 x 65536 indexed by the
 *                                                       sample's bits as uint16)
 *   engine.fileno()        an eventfd, readable when a stream has bailed or has
 *                          `threshold` slots of log waiting
 *   engine.ack()           read (reset) the eventfd
 *   engine.now()           CLOCK_MONOTONIC, seconds
 *   engine.add(...)        serve a stream from its next slot on; returns its id (the
 *                          engine keeps duplicates of its descriptors; after `stale`
 *                          slots without a drain it stops serving it: Python stalled)
 *   engine.drain(id)       the stream's log so far (list of tuples); [] when none
 *   engine.remove(id)      stop serving it (synchronously) and return the rest of its log
 *   engine.feed(id, datagrams, end)  queue more datagrams to send (queue mode); False
 *                          when the stream is no longer served
 *   engine.stats()         counters of the thread
 *   engine.close()         stop the thread (streams are dropped)
 *
 * Log records: ("a", arrival, (host, port), datagram), ("e", errno),
 *              ("s", slot, sent_at, errno_or_0), ("p", slot, seq, next_datagram),
 *              queue mode: ("s", send_slot, sent_at, errno_or_0, datagram), ("p", slot, seq, None),
 *              ("b", slot, sent_first)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if !defined(__linux__)
#error "the native media engine needs Linux (recvmsg timestamps, eventfd)"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAYLOAD 480 /* bytes of one frame (60 ms of G.711 at most) */
#define QCAP 64         /* packets queued ahead of the playout per stream */
#define MAX_READS 32    /* datagrams read per stream per slot (as the Python drain) */
#define RXBUF 65536
#define TXCAP 128     /* datagrams queued to send per stream (queue mode) */
#define TX_LOW 32     /* queue mode: wake Python to refill when this few are left */

enum { R_ARRIVAL = 'a', R_RXERR = 'e', R_SENT = 's', R_PLAYED = 'p', R_BAIL = 'b' };

typedef struct {
    char kind;
    int err;
    double t1, t2;
    uint32_t seq;
    uint32_t ip;   /* network order */
    uint16_t port; /* host order */
    Py_ssize_t len;
    unsigned char *data; /* owned */
} rec_t;

typedef struct {
    uint16_t seq;
    uint32_t ts;
    double arrival;
    unsigned char payload[MAX_PAYLOAD];
} qitem_t;

typedef struct stream {
    long id;
    int rx_fd, tx_fd;
    struct sockaddr_in dst;
    uint32_t src_ip; /* network order */
    uint16_t src_port;
    int pt_in;
    uint32_t ssrc_in;
    uint16_t next_seq_in;
    uint32_t next_ts_in, ts_inc_in;
    int law; /* 0 mu-law, 1 A-law */
    int frame_bytes;
    double play_start, frame_ms;
    long long k; /* index of the next slot */
    unsigned char prev[12 + MAX_PAYLOAD];
    int prev_len;
    uint16_t seq_out;
    uint32_t ts_out, ts_inc_out, ssrc_out;
    int pt_out;
    qitem_t *queue;
    int qhead, qlen;
    rec_t *log;
    Py_ssize_t nlog, caplog;
    int slots_logged;
    int slots_undrained; /* slots since Python last took the log */
    int threshold;
    int stale; /* slots without a drain after which the thread stops serving the stream */
    int bailed;
    int stamps;
    /* queue mode (a stream whose outgoing frames do not depend on what arrives: a prompt,
     * silence): Python hands the datagrams to send; the engine sends one per send slot */
    int txmode;
    double send_t0;      /* the stream's send clock: slot j is sent at send_t0 + (j + 1) * frame */
    long long send_k;    /* index of the next send slot */
    unsigned char *txq;  /* TXCAP datagrams of 12 + MAX_PAYLOAD bytes */
    int txlen_of[TXCAP]; /* their lengths */
    int txhead, txlen;
    int tx_end;          /* the last datagram to send is queued */
    struct stream *next;
} stream_t;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int thread_started, stop;
    int efd;
    double offset; /* loop time - CLOCK_MONOTONIC, seconds */
    stream_t *streams;
    long next_id;
    int16_t dec[2][256];
    unsigned char enc[2][65536];
    unsigned char *rxbuf;
    /* counters */
    unsigned long long ticks, slots, sends, reads, bails, signals;
} Engine;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* the slot time exactly as LiveAudioStream._arm_play computes it (loop clock, seconds) */
static inline double slot_time(const stream_t *s, long long k)
{
    return s->play_start + ((double)k * s->frame_ms) / 1000.0;
}

static rec_t *push_rec(stream_t *s, char kind)
{
    if (s->nlog == s->caplog) {
        Py_ssize_t cap = s->caplog ? s->caplog * 2 : 64;
        rec_t *n = (rec_t *)realloc(s->log, (size_t)cap * sizeof(rec_t));
        if (n == NULL)
            return NULL;
        s->log = n;
        s->caplog = cap;
    }
    rec_t *r = &s->log[s->nlog++];
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    return r;
}

static void free_log(rec_t *log, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        free(log[i].data);
    free(log);
}

static void signal_python(Engine *e)
{
    uint64_t one = 1;
    ssize_t r = write(e->efd, &one, sizeof(one));
    (void)r;
    e->signals++;
}

/* the send slot time exactly as LiveAudioStream._arm_send computes it (loop clock, seconds) */
static inline double send_time(const stream_t *s)
{
    return s->send_t0 + (double)(s->send_k + 1) * s->frame_ms / 1000.0;
}

/* queue mode: a send slot is due (nothing left to send: never) */
static inline int sends_pending(const stream_t *s) { return s->txmode && !(s->tx_end && s->txlen == 0); }

static void bail(Engine *e, stream_t *s, double slot, int sent_first)
{
    rec_t *r = push_rec(s, R_BAIL);
    if (r != NULL) {
        r->t1 = slot;
        r->err = sent_first;
    }
    s->bailed = 1;
    e->bails++;
}

/* phase 1: send the datagram built in the previous slot. Returns 0, or -1 when it would
 * block (the stream bails before sending: Python's transport queues it). */
static int send_prev(Engine *e, stream_t *s, double slot)
{
    double at = mono_now() + e->offset;
    ssize_t n = sendto(s->tx_fd, s->prev, (size_t)s->prev_len, MSG_DONTWAIT, (struct sockaddr *)&s->dst, sizeof(s->dst));
    int err = 0;
    if (n < 0) {
        err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
            bail(e, s, slot, 0);
            return -1;
        }
    }
    rec_t *r = push_rec(s, R_SENT);
    if (r == NULL) {
        bail(e, s, slot, 1);
        return -1;
    }
    r->t1 = slot;
    r->t2 = at;
    r->err = err;
    e->sends++;
    return 0;
}

/* phase 1, queue mode: send the next queued datagram (its send slot is due). Returns 0, 1
 * when Python should refill the queue, or -1 when the stream bailed (the queue ran dry, or
 * the send would block: Python sends it, and plays the stream from its next playout slot). */
static int send_queued(Engine *e, stream_t *s)
{
    if (s->txlen == 0) {
        bail(e, s, slot_time(s, s->k), 2);
        return -1;
    }
    double scheduled = send_time(s);
    const unsigned char *d = s->txq + (size_t)s->txhead * (12 + MAX_PAYLOAD);
    int len = s->txlen_of[s->txhead];
    double at = mono_now() + e->offset;
    ssize_t n = sendto(s->tx_fd, d, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&s->dst, sizeof(s->dst));
    int err = 0;
    if (n < 0) {
        err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
            bail(e, s, slot_time(s, s->k), 2);
            return -1;
        }
    }
    rec_t *r = push_rec(s, R_SENT);
    unsigned char *copy = r == NULL ? NULL : (unsigned char *)malloc((size_t)len);
    if (copy == NULL) {
        if (r != NULL)
            s->nlog--;
        bail(e, s, slot_time(s, s->k), 2); /* sent but not logged: never happens short of memory */
        return -1;
    }
    memcpy(copy, d, (size_t)len);
    r->t1 = scheduled;
    r->t2 = at;
    r->err = err;
    r->data = copy;
    r->len = len;
    s->txhead = (s->txhead + 1) % TXCAP;
    s->txlen--;
    s->send_k++;
    e->sends++;
    return (!s->tx_end && s->txlen == TX_LOW) ? 1 : 0;
}

/* Is this datagram the next packet of the steady stream? Queue it if so. */
static int steady_packet(stream_t *s, const unsigned char *d, Py_ssize_t n, double arrival)
{
    if (n != 12 + s->frame_bytes || d[0] != 0x80 || (d[1] & 0x7F) != s->pt_in || (d[1] & 0x80))
        return 0;
    uint16_t seq = (uint16_t)((d[2] << 8) | d[3]);
    uint32_t ts = ((uint32_t)d[4] << 24) | ((uint32_t)d[5] << 16) | ((uint32_t)d[6] << 8) | d[7];
    uint32_t ssrc = ((uint32_t)d[8] << 24) | ((uint32_t)d[9] << 16) | ((uint32_t)d[10] << 8) | d[11];
    if (ssrc != s->ssrc_in || seq != s->next_seq_in || ts != s->next_ts_in || s->qlen >= QCAP)
        return 0;
    qitem_t *q = &s->queue[(s->qhead + s->qlen) % QCAP];
    q->seq = seq;
    q->ts = ts;
    q->arrival = arrival;
    memcpy(q->payload, d + 12, (size_t)s->frame_bytes);
    s->qlen++;
    s->next_seq_in = (uint16_t)(seq + 1);
    s->next_ts_in = ts + s->ts_inc_in;
    return 1;
}

/* phase 2, read: every datagram waiting in the socket, logged; returns 0, or -1 when one
 * is not the steady stream's (the stream then bails at this slot) */
static int read_socket(Engine *e, stream_t *s)
{
    int bad = 0;
    for (int i = 0; i < MAX_READS && !bad; i++) {
        struct sockaddr_in src;
        struct iovec iov = {e->rxbuf, RXBUF};
        union {
            char buf[CMSG_SPACE(sizeof(struct timespec))];
            struct cmsghdr align;
        } cbuf;
        struct msghdr mh;
        memset(&mh, 0, sizeof(mh));
        mh.msg_name = &src;
        mh.msg_namelen = sizeof(src);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = s->stamps ? cbuf.buf : NULL;
        mh.msg_controllen = s->stamps ? sizeof(cbuf.buf) : 0;
        ssize_t n = recvmsg(s->rx_fd, &mh, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            rec_t *r = push_rec(s, R_RXERR);
            if (r == NULL)
                return -1;
            r->err = errno;
            continue;
        }
        double mono = mono_now();
        double arrival = mono + e->offset;
        if (s->stamps) {
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
                    struct timespec st;
                    memcpy(&st, CMSG_DATA(c), sizeof(st));
                    double age = real_now() - ((double)st.tv_sec + st.tv_nsec * 1e-9);
                    if (age > 0.0 && age < 5.0)
                        arrival -= age;
                }
            }
        }
        e->reads++;
        rec_t *r = push_rec(s, R_ARRIVAL);
        if (r == NULL)
            return -1;
        r->t1 = arrival;
        r->ip = src.sin_addr.s_addr;
        r->port = ntohs(src.sin_port);
        r->len = n;
        r->data = (unsigned char *)malloc(n > 0 ? (size_t)n : 1);
        if (r->data == NULL) {
            s->nlog--;
            return -1;
        }
        memcpy(r->data, e->rxbuf, (size_t)n);
        if ((mh.msg_flags & MSG_TRUNC) || src.sin_family != AF_INET || src.sin_addr.s_addr != s->src_ip ||
            ntohs(src.sin_port) != s->src_port) {
            bad = 1;
        } else if (n >= 2 && e->rxbuf[1] >= 192 && e->rxbuf[1] <= 223) {
            /* RTCP (RFC 5761 4): logged for Python's session; playout unaffected */
        } else if (!steady_packet(s, e->rxbuf, n, arrival)) {
            bad = 1;
        }
    }
    return bad ? -1 : 0;
}

/* phase 2, play: the slot's packet, if in the queue in time; builds the next datagram */
static int play_slot(Engine *e, stream_t *s, double slot)
{
    if (s->qlen == 0)
        return -1;
    qitem_t *q = &s->queue[s->qhead];
    if (!(q->arrival <= slot + 1e-9)) /* as the jitter buffer's delivery test */
        return -1;
    if (s->txmode) { /* played; nothing to build (Python queued what is sent) */
        rec_t *r = push_rec(s, R_PLAYED);
        if (r == NULL)
            return -1;
        r->t1 = slot;
        r->seq = q->seq;
        s->qhead = (s->qhead + 1) % QCAP;
        s->qlen--;
        e->slots++;
        return 0;
    }
    const int16_t *dec = e->dec[s->law];
    const unsigned char *enc = e->enc[s->law];
    unsigned char *p = s->prev;
    p[0] = 0x80;
    p[1] = (unsigned char)(s->pt_out & 0x7F);
    p[2] = (unsigned char)(s->seq_out >> 8);
    p[3] = (unsigned char)(s->seq_out & 0xFF);
    p[4] = (unsigned char)(s->ts_out >> 24);
    p[5] = (unsigned char)(s->ts_out >> 16);
    p[6] = (unsigned char)(s->ts_out >> 8);
    p[7] = (unsigned char)s->ts_out;
    p[8] = (unsigned char)(s->ssrc_out >> 24);
    p[9] = (unsigned char)(s->ssrc_out >> 16);
    p[10] = (unsigned char)(s->ssrc_out >> 8);
    p[11] = (unsigned char)s->ssrc_out;
    for (int i = 0; i < s->frame_bytes; i++)
        p[12 + i] = enc[(uint16_t)dec[q->payload[i]]];
    s->prev_len = 12 + s->frame_bytes;
    rec_t *r = push_rec(s, R_PLAYED);
    if (r == NULL)
        return -1;
    r->t1 = slot;
    r->seq = q->seq;
    r->len = s->prev_len;
    r->data = (unsigned char *)malloc((size_t)s->prev_len);
    if (r->data == NULL) {
        s->nlog--;
        return -1;
    }
    memcpy(r->data, p, (size_t)s->prev_len);
    s->seq_out = (uint16_t)(s->seq_out + 1);
    s->ts_out += s->ts_inc_out;
    s->qhead = (s->qhead + 1) % QCAP;
    s->qlen--;
    e->slots++;
    return 0;
}

static void *engine_thread(void *arg)
{
    Engine *e = (Engine *)arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        double next = 0.0;
        int any = 0;
        for (stream_t *s = e->streams; s != NULL; s = s->next) {
            if (s->bailed)
                continue;
            double t = slot_time(s, s->k) - e->offset;
            if (sends_pending(s) && send_time(s) - e->offset < t)
                t = send_time(s) - e->offset;
            if (!any || t < next)
                next = t;
            any = 1;
        }
        if (!any) {
            pthread_cond_wait(&e->cv, &e->mu);
            continue;
        }
        double now = mono_now();
        if (now < next) {
            struct timespec ts;
            ts.tv_sec = (time_t)next;
            ts.tv_nsec = (long)((next - (double)ts.tv_sec) * 1e9);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
            continue; /* re-evaluate: a stream may have come or gone */
        }
        e->ticks++;
        /* phase 1 for every due stream, then phase 2: the k-th send waits for k - 1 sends only */
        int signal = 0;
        for (stream_t *s = e->streams; s != NULL; s = s->next) {
            if (s->bailed)
                continue;
            if (s->txmode) {
                while (!s->bailed && sends_pending(s) && send_time(s) - e->offset <= now) {
                    int r = send_queued(e, s);
                    if (r != 0)
                        signal = 1;
                }
                continue;
            }
            if (slot_time(s, s->k) - e->offset > now)
                continue;
            if (send_prev(e, s, slot_time(s, s->k)) < 0)
                signal = 1;
        }
        for (stream_t *s = e->streams; s != NULL; s = s->next) {
            if (s->bailed || slot_time(s, s->k) - e->offset > now)
                continue;
            double slot = slot_time(s, s->k);
            if (read_socket(e, s) < 0 || play_slot(e, s, slot) < 0) {
                bail(e, s, slot, 1);
                signal = 1;
                continue;
            }
            s->k++;
            if (++s->slots_logged >= s->threshold)
                signal = 1;
            if (++s->slots_undrained >= s->stale) {
                /* Python has not taken the log for this long (its loop stalled, or the stream
                 * was dropped without close()): stop, and leave the next slot to Python */
                bail(e, s, slot_time(s, s->k), s->txmode ? 2 : 0);
                signal = 1;
            }
        }
        if (signal) {
            for (stream_t *s = e->streams; s != NULL; s = s->next)
                s->slots_logged = 0; /* Python drains every stream when woken */
            signal_python(e);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ------------------------------------------------------------------ Python glue */

static int Engine_init(Engine *self, PyObject *args, PyObject *kwds)
{
    Py_buffer ud, ue, ad, ae;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &ud, &ue, &ad, &ae))
        return -1;
    int ok = ud.len == 512 && ad.len == 512 && ue.len == 65536 && ae.len == 65536;
    if (ok) {
        memcpy(self->dec[0], ud.buf, 512);
        memcpy(self->dec[1], ad.buf, 512);
        memcpy(self->enc[0], ue.buf, 65536);
        memcpy(self->enc[1], ae.buf, 65536);
    }
    PyBuffer_Release(&ud);
    PyBuffer_Release(&ue);
    PyBuffer_Release(&ad);
    PyBuffer_Release(&ae);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "tables: 256 int16 and 65536 uint8 per law");
        return -1;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&self->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&self->mu, NULL);
    self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->efd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->rxbuf = (unsigned char *)malloc(RXBUF);
    if (self->rxbuf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->offset = 0.0;
    self->next_id = 1;
    return 0;
}

static void free_stream(stream_t *s)
{
    if (s->rx_fd >= 0)
        close(s->rx_fd);
    if (s->tx_fd >= 0)
        close(s->tx_fd);
    free_log(s->log, s->nlog);
    free(s->queue);
    free(s->txq);
    free(s);
}

static PyObject *Engine_close(Engine *self, PyObject *unused)
{
    if (self->thread_started) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->mu);
        self->stop = 1;
        pthread_cond_signal(&self->cv);
        pthread_mutex_unlock(&self->mu);
        pthread_join(self->thread, NULL);
        Py_END_ALLOW_THREADS
        self->thread_started = 0;
    }
    while (self->streams != NULL) {
        stream_t *s = self->streams;
        self->streams = s->next;
        free_stream(s);
    }
    if (self->efd > 0) {
        close(self->efd);
        self->efd = -1;
    }
    Py_RETURN_NONE;
}

static void Engine_dealloc(Engine *self)
{
    PyObject *r = Engine_close(self, NULL);
    Py_XDECREF(r);
    free(self->rxbuf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Engine_fileno(Engine *self, PyObject *unused) { return PyLong_FromLong(self->efd); }

static PyObject *Engine_ack(Engine *self, PyObject *unused)
{
    uint64_t v = 0;
    ssize_t r = read(self->efd, &v, sizeof(v));
    (void)r;
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *Engine_now(Engine *self, PyObject *unused) { return PyFloat_FromDouble(mono_now()); }

static int parse_ip(const char *host, uint32_t *out)
{
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1)
        return -1;
    *out = a.s_addr;
    return 0;
}

/* datagrams (a sequence of bytes, each 12..12 + MAX_PAYLOAD long) parsed into buf/lens;
 * returns their number, or -1 with an exception */
static int parse_datagrams(PyObject *items, unsigned char *buf, int *lens, int room)
{
    PyObject *seq = PySequence_Fast(items, "datagrams must be a sequence of bytes");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > room) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many datagrams queued to send");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        char *d;
        Py_ssize_t len;
        if (!PyBytes_Check(o) || PyBytes_AsStringAndSize(o, &d, &len) < 0 || len < 12 || len > 12 + MAX_PAYLOAD) {
            Py_DECREF(seq);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a datagram to send must be bytes of 12 to 492 octets");
            return -1;
        }
        memcpy(buf + (size_t)i * (12 + MAX_PAYLOAD), d, (size_t)len);
        lens[i] = (int)len;
    }
    Py_DECREF(seq);
    return (int)n;
}

static PyObject *Engine_add(Engine *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"rx_fd", "tx_fd", "dst", "src", "payload_type", "ssrc", "next_seq", "next_timestamp",
                         "timestamp_increment", "law", "frame_bytes", "play_start", "frame_ms", "k", "prev",
                         "queue", "threshold", "stamps", "offset", "stale", "send_t0", "send_k", "txq", "tx_end", NULL};
    int rx_fd, tx_fd, pt, law, frame_bytes, threshold, stamps, stale = 500, tx_end = 0;
    double send_t0 = 0.0;
    long long send_k = 0;
    PyObject *txq = Py_None;
    const char *dst_host, *src_host;
    int dst_port, src_port;
    unsigned long ssrc, next_ts, ts_inc;
    unsigned int next_seq;
    double play_start, frame_ms, offset;
    long long k;
    Py_buffer prev;
    PyObject *queue;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ii(si)(si)ikIkkiiddLy*Oipd|idLOp", kw, &rx_fd, &tx_fd, &dst_host, &dst_port,
                                     &src_host, &src_port, &pt, &ssrc, &next_seq, &next_ts, &ts_inc, &law, &frame_bytes,
                                     &play_start, &frame_ms, &k, &prev, &queue, &threshold, &stamps, &offset, &stale,
                                     &send_t0, &send_k, &txq, &tx_end))
        return NULL;
    stream_t *s = NULL;
    PyObject *seq = NULL;
    if (law < 0 || law > 1 || frame_bytes <= 0 || frame_bytes > MAX_PAYLOAD || prev.len != 12 + frame_bytes ||
        threshold < 1 || stale < 1 || frame_ms <= 0) {
        PyErr_SetString(PyExc_ValueError, "stream parameters out of range");
        goto fail;
    }
    s = (stream_t *)calloc(1, sizeof(stream_t));
    if (s == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    s->rx_fd = s->tx_fd = -1;
    if ((s->queue = (qitem_t *)calloc(QCAP, sizeof(qitem_t))) == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    s->dst.sin_family = AF_INET;
    s->dst.sin_port = htons((uint16_t)dst_port);
    if (parse_ip(dst_host, &s->dst.sin_addr.s_addr) < 0 || parse_ip(src_host, &s->src_ip) < 0) {
        PyErr_SetString(PyExc_ValueError, "addresses must be IPv4 literals");
        goto fail;
    }
    /* the engine's own descriptors: whatever Python does with its sockets, these stay
     * valid (and never name another socket) until the stream leaves the engine */
    s->rx_fd = fcntl(rx_fd, F_DUPFD_CLOEXEC, 0);
    s->tx_fd = s->rx_fd < 0 ? -1 : fcntl(tx_fd, F_DUPFD_CLOEXEC, 0);
    if (s->rx_fd < 0 || s->tx_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    s->src_port = (uint16_t)src_port;
    s->pt_in = pt;
    s->ssrc_in = (uint32_t)ssrc;
    s->next_seq_in = (uint16_t)next_seq;
    s->next_ts_in = (uint32_t)next_ts;
    s->ts_inc_in = (uint32_t)ts_inc;
    s->ts_inc_out = (uint32_t)ts_inc;
    s->law = law;
    s->frame_bytes = frame_bytes;
    s->play_start = play_start;
    s->frame_ms = frame_ms;
    s->k = k;
    memcpy(s->prev, prev.buf, (size_t)prev.len);
    s->prev_len = (int)prev.len;
    const unsigned char *p = s->prev;
    s->pt_out = p[1] & 0x7F;
    s->seq_out = (uint16_t)(((p[2] << 8) | p[3]) + 1);
    s->ts_out = (((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7]) + s->ts_inc_out;
    s->ssrc_out = ((uint32_t)p[8] << 24) | ((uint32_t)p[9] << 16) | ((uint32_t)p[10] << 8) | p[11];
    s->threshold = threshold;
    s->stale = stale;
    s->stamps = stamps;
    seq = PySequence_Fast(queue, "queue must be a sequence of (seq, timestamp, payload, arrival)");
    if (seq == NULL)
        goto fail;
    Py_ssize_t nq = PySequence_Fast_GET_SIZE(seq);
    if (nq > QCAP) {
        PyErr_SetString(PyExc_ValueError, "too many queued packets");
        goto fail;
    }
    for (Py_ssize_t i = 0; i < nq; i++) {
        unsigned int qs;
        unsigned long qts;
        Py_buffer pl;
        double arr;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "Iky*d", &qs, &qts, &pl, &arr))
            goto fail;
        if (pl.len != frame_bytes) {
            PyBuffer_Release(&pl);
            PyErr_SetString(PyExc_ValueError, "queued payload of another size");
            goto fail;
        }
        qitem_t *q = &s->queue[i];
        q->seq = (uint16_t)qs;
        q->ts = (uint32_t)qts;
        q->arrival = arr;
        memcpy(q->payload, pl.buf, (size_t)frame_bytes);
        PyBuffer_Release(&pl);
    }
    s->qlen = (int)nq;
    Py_CLEAR(seq);
    if (txq != Py_None) {
        s->txmode = 1;
        s->send_t0 = send_t0;
        s->send_k = send_k;
        s->tx_end = tx_end;
        if ((s->txq = (unsigned char *)malloc((size_t)TXCAP * (12 + MAX_PAYLOAD))) == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        int n = parse_datagrams(txq, s->txq, s->txlen_of, TXCAP);
        if (n < 0)
            goto fail;
        s->txlen = n;
    }
    PyBuffer_Release(&prev);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->mu);
    self->offset = offset;
    s->id = self->next_id++;
    s->next = self->streams;
    self->streams = s;
    pthread_cond_signal(&self->cv);
    pthread_mutex_unlock(&self->mu);
    Py_END_ALLOW_THREADS
    if (!self->thread_started) {
        if (pthread_create(&self->thread, NULL, engine_thread, self) != 0) {
            PyErr_SetString(PyExc_OSError, "could not start the media thread");
            return NULL; /* the stream stays listed, never served: remove() drops it */
        }
        self->thread_started = 1;
    }
    return PyLong_FromLong(s->id);
fail:
    Py_XDECREF(seq);
    PyBuffer_Release(&prev);
    if (s != NULL)
        free_stream(s);
    return NULL;
}

static PyObject *log_to_list(rec_t *log, Py_ssize_t n)
{
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        rec_t *r = &log[i];
        PyObject *t = NULL;
        switch (r->kind) {
        case R_ARRIVAL: {
            char host[INET_ADDRSTRLEN];
            struct in_addr a;
            a.s_addr = r->ip;
            inet_ntop(AF_INET, &a, host, sizeof(host));
            t = Py_BuildValue("(Cd(si)y#)", 'a', r->t1, host, (int)r->port, (const char *)r->data, r->len);
            break;
        }
        case R_RXERR:
            t = Py_BuildValue("(Ci)", 'e', r->err);
            break;
        case R_SENT:
            if (r->data != NULL)
                t = Py_BuildValue("(Cddiy#)", 's', r->t1, r->t2, r->err, (const char *)r->data, r->len);
            else
                t = Py_BuildValue("(Cddi)", 's', r->t1, r->t2, r->err);
            break;
        case R_PLAYED:
            if (r->data != NULL)
                t = Py_BuildValue("(CdIy#)", 'p', r->t1, (unsigned int)r->seq, (const char *)r->data, r->len);
            else
                t = Py_BuildValue("(CdIO)", 'p', r->t1, (unsigned int)r->seq, Py_None);
            break;
        default:
            t = Py_BuildValue("(Cdi)", 'b', r->t1, r->err);
        }
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

/* take stream id's log (and, with drop, the stream itself) under the lock */
static PyObject *take(Engine *self, long id, int drop)
{
    rec_t *log = NULL;
    Py_ssize_t n = 0;
    int found = 0;
    stream_t *gone = NULL;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->mu);
    for (stream_t **pp = &self->streams; *pp != NULL; pp = &(*pp)->next) {
        stream_t *s = *pp;
        if (s->id != id)
            continue;
        found = 1;
        log = s->log;
        n = s->nlog;
        s->log = NULL;
        s->nlog = s->caplog = 0;
        s->slots_undrained = 0;
        if (drop || s->bailed) {
            *pp = s->next;
            gone = s;
        }
        break;
    }
    if (gone != NULL)
        pthread_cond_signal(&self->cv);
    pthread_mutex_unlock(&self->mu);
    Py_END_ALLOW_THREADS
    if (gone != NULL)
        free_stream(gone);
    if (!found)
        return PyList_New(0);
    PyObject *out = log_to_list(log, n);
    free_log(log, n);
    return out;
}

static PyObject *Engine_drain(Engine *self, PyObject *arg)
{
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    return take(self, id, 0);
}

static PyObject *Engine_remove(Engine *self, PyObject *arg)
{
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    return take(self, id, 1);
}

static PyObject *Engine_feed(Engine *self, PyObject *args)
{
    long id;
    PyObject *items;
    int end;
    if (!PyArg_ParseTuple(args, "lOp", &id, &items, &end))
        return NULL;
    unsigned char *buf = (unsigned char *)malloc((size_t)TXCAP * (12 + MAX_PAYLOAD));
    int lens[TXCAP];
    if (buf == NULL)
        return PyErr_NoMemory();
    int n = parse_datagrams(items, buf, lens, TXCAP);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    int status = 0; /* 1 queued, 0 no such stream (it left the engine), -1 no room */
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->mu);
    for (stream_t *s = self->streams; s != NULL; s = s->next) {
        if (s->id != id)
            continue;
        if (!s->txmode || s->bailed) {
            status = 0;
        } else if (s->txlen + n > TXCAP || (s->tx_end && n > 0)) {
            status = -1;
        } else {
            for (int i = 0; i < n; i++) {
                int slot = (s->txhead + s->txlen) % TXCAP;
                memcpy(s->txq + (size_t)slot * (12 + MAX_PAYLOAD), buf + (size_t)i * (12 + MAX_PAYLOAD), (size_t)lens[i]);
                s->txlen_of[slot] = lens[i];
                s->txlen++;
            }
            s->tx_end = s->tx_end || end;
            status = 1;
        }
        break;
    }
    pthread_mutex_unlock(&self->mu);
    Py_END_ALLOW_THREADS
    free(buf);
    if (status < 0) {
        PyErr_SetString(PyExc_ValueError, "no room for these datagrams in the stream's send queue");
        return NULL;
    }
    return PyBool_FromLong(status);
}

static PyObject *Engine_stats(Engine *self, PyObject *unused)
{
    int n = 0;
    pthread_mutex_lock(&self->mu);
    for (stream_t *s = self->streams; s != NULL; s = s->next)
        n++;
    PyObject *d = Py_BuildValue("{sKsKsKsKsKsKsi}", "ticks", self->ticks, "slots", self->slots, "sends", self->sends,
                                "reads", self->reads, "bails", self->bails, "signals", self->signals, "streams", n);
    pthread_mutex_unlock(&self->mu);
    return d;
}

static PyMethodDef Engine_methods[] = {
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "The eventfd Python watches."},
    {"ack", (PyCFunction)Engine_ack, METH_NOARGS, "Read (reset) the eventfd."},
    {"now", (PyCFunction)Engine_now, METH_NOARGS, "CLOCK_MONOTONIC, seconds."},
    {"add", (PyCFunction)(void (*)(void))Engine_add, METH_VARARGS | METH_KEYWORDS, "Serve a stream; returns its id."},
    {"drain", (PyCFunction)Engine_drain, METH_O, "A stream's log so far."},
    {"remove", (PyCFunction)Engine_remove, METH_O, "Stop serving a stream; the rest of its log."},
    {"feed", (PyCFunction)Engine_feed, METH_VARARGS, "Queue datagrams to send (queue mode): feed(id, datagrams, end)."},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "Counters of the media thread."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "Stop the media thread."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "voicelab.rtp._mediac.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Native thread serving steady G.711 echo streams (see voicelab/rtp/native.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mediac", "Native media engine of voicelab.rtp.", -1, NULL};

PyMODINIT_FUNC PyInit__mediac(void)
{
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
