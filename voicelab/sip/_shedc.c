/* Optional C accelerator of voicelab.sip.shed (stateless refusals on the raw datagram).
 *
 * The byte logic is the same as the pure-Python module's (voicelab/sip/shed.py), which
 * stays the reference and the fallback (VOICELAB_NO_EXTENSIONS=1, or no compiler at
 * install time); tests/test_sip_shed.py checks both agree on generated and malformed
 * datagrams.
 *
 *   triage(data)                          -> what shed.triage returns, or NotImplemented
 *                                            (more header lines than this code tracks:
 *                                            the caller asks the Python version)
 *   refuse(data, line, retry_after, tag)  -> the response shed.respond builds for an
 *                                            INVITE that triage calls "invite", else None
 *   drain(fd, max_n, max_bytes, decide)   -> the socket adapter: recvmmsg a batch, drop
 *                                            the ACKs of our refusals, ask decide(call_id)
 *                                            about each new INVITE (but one whose top Via
 *                                            asks for RFC 7339 feedback: handed back),
 *                                            sendmmsg the refusals, hand every other
 *                                            datagram back in order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#if defined(__linux__)
#define _SHEDC_MMSG 1
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#define MAXF 64 /* header lines of interest tracked per datagram */

enum { S_VIA, S_FROM, S_TO, S_CID, S_CSEQ, S_TS, NSLOTS };
enum { K_OTHER = 0, K_INVITE = 1, K_SHED_ACK = 2, K_UNKNOWN = -1 };

typedef struct {
    int slot;
    Py_ssize_t off, len;
} field_t;

typedef struct {
    int nf;
    field_t f[MAXF];
    int count[NSLOTS];
    int first[NSLOTS]; /* index in f of the slot's first value */
} scan_t;

static inline int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static int ci_eq(const char *p, const char *lit, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (lower((unsigned char)p[i]) != lit[i])
            return 0;
    return 1;
}

/* header name (as written, any case, compact forms) -> slot, or -1 */
static int slot_of(const char *p, Py_ssize_t n)
{
    switch (n) {
    case 1:
        switch (lower((unsigned char)p[0])) {
        case 'v': return S_VIA;
        case 'f': return S_FROM;
        case 't': return S_TO;
        case 'i': return S_CID;
        }
        return -1;
    case 2: return ci_eq(p, "to", 2) ? S_TO : -1;
    case 3: return ci_eq(p, "via", 3) ? S_VIA : -1;
    case 4:
        if (ci_eq(p, "from", 4)) return S_FROM;
        if (ci_eq(p, "cseq", 4)) return S_CSEQ;
        return -1;
    case 7: return ci_eq(p, "call-id", 7) ? S_CID : -1;
    case 9: return ci_eq(p, "timestamp", 9) ? S_TS : -1;
    }
    return -1;
}

/* shed.py's _OL_TAG_RE.search(data): "tag" [ \t]* "=" [ \t]* "ol", any case, anywhere */
static int has_ol_tag(const char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i + 3 <= n; i++) {
        if (lower((unsigned char)p[i]) != 't' || !ci_eq(p + i, "tag", 3))
            continue;
        Py_ssize_t j = i + 3;
        while (j < n && (p[j] == ' ' || p[j] == '\t')) j++;
        if (j >= n || p[j] != '=') continue;
        j++;
        while (j < n && (p[j] == ' ' || p[j] == '\t')) j++;
        if (j + 2 <= n && lower((unsigned char)p[j]) == 'o' && lower((unsigned char)p[j + 1]) == 'l')
            return 1;
    }
    return 0;
}

/* shed.py's _to_tag: the first ";" [ \t]* "tag" [ \t]* "=" [ \t]* [^;, \t>]+ after the
 * last '>' of the To value (or from its start); sets tag and tlen when found */
static int to_tag(const char *v, Py_ssize_t n, const char **tag, Py_ssize_t *tlen)
{
    Py_ssize_t s = 0;
    for (Py_ssize_t i = n - 1; i >= 0; i--)
        if (v[i] == '>') { s = i + 1; break; }
    for (Py_ssize_t i = s; i < n; i++) {
        if (v[i] != ';') continue;
        Py_ssize_t j = i + 1;
        while (j < n && (v[j] == ' ' || v[j] == '\t')) j++;
        if (j + 3 > n || !ci_eq(v + j, "tag", 3)) continue;
        j += 3;
        while (j < n && (v[j] == ' ' || v[j] == '\t')) j++;
        if (j >= n || v[j] != '=') continue;
        j++;
        while (j < n && (v[j] == ' ' || v[j] == '\t')) j++;
        Py_ssize_t k = j;
        while (k < n && v[k] != ';' && v[k] != ',' && v[k] != ' ' && v[k] != '\t' && v[k] != '>') k++;
        if (k > j) { *tag = v + j; *tlen = k - j; return 1; }
    }
    return 0;
}

/* shed.triage's decision on p[0:n]; fills *s with the header values (offsets in p) */
static int scan(const char *p, Py_ssize_t n, scan_t *s)
{
    int invite;
    if (n >= 7 && memcmp(p, "INVITE ", 7) == 0)
        invite = 1;
    else if (n >= 4 && memcmp(p, "ACK ", 4) == 0) {
        if (!has_ol_tag(p, n)) return K_OTHER;
        invite = 0;
    } else
        return K_OTHER;
    /* the header block, with the last line's CRLF */
    Py_ssize_t hl = -1;
    for (Py_ssize_t i = 0; i + 4 <= n; i++) {
        const char *q = memchr(p + i, '\r', (size_t)(n - 3 - i));
        if (q == NULL) break;
        i = q - p;
        if (q[1] == '\n' && q[2] == '\r' && q[3] == '\n') { hl = i + 2; break; }
    }
    if (hl < 0) return K_OTHER;
    /* every CR followed by LF, every LF preceded by CR, no folded line */
    for (Py_ssize_t i = 0; i < hl; i++) {
        char c = p[i];
        if (c == '\r') {
            if (i + 1 >= hl || p[i + 1] != '\n') return K_OTHER;
        } else if (c == '\n') {
            if (i == 0 || p[i - 1] != '\r') return K_OTHER;
            if (i + 1 < hl && (p[i + 1] == ' ' || p[i + 1] == '\t')) return K_OTHER;
        }
    }
    memset(s->count, 0, sizeof s->count);
    s->nf = 0;
    const char *q = p;
    const char *end = p + hl;
    while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        const char *a = ++q; /* the line after the LF */
        const char *b = a;
        while (b < end && *b != ' ' && *b != '\t' && *b != ':' && *b != '\r') b++;
        if (b >= end || *b == '\r') continue;
        int slot = slot_of(a, b - a);
        if (slot < 0) continue;
        while (*b == ' ' || *b == '\t') b++;
        if (*b != ':') continue;
        b++;
        while (*b == ' ' || *b == '\t') b++;
        const char *e = b;
        while (*e != '\r' && *e != '\n') e++; /* the header block ends in CRLF */
        while (e > b && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (s->nf == MAXF) return K_UNKNOWN;
        if (s->count[slot]++ == 0) s->first[slot] = s->nf;
        s->f[s->nf].slot = slot;
        s->f[s->nf].off = b - p;
        s->f[s->nf].len = e - b;
        s->nf++;
        q = e;
    }
    if (s->count[S_TO] != 1 || s->count[S_CID] != 1 || s->count[S_VIA] == 0) return K_OTHER;
    const field_t *cid = &s->f[s->first[S_CID]];
    for (Py_ssize_t i = 0; i < cid->len; i++)
        if ((unsigned char)p[cid->off + i] >= 0x80) return K_OTHER;
    const field_t *to = &s->f[s->first[S_TO]];
    const char *tag;
    Py_ssize_t tlen;
    int has_tag = to_tag(p + to->off, to->len, &tag, &tlen);
    if (invite) return has_tag ? K_OTHER : K_INVITE;
    return (has_tag && tlen >= 2 && tag[0] == 'o' && tag[1] == 'l') ? K_SHED_ACK : K_OTHER;
}

/* whether the top Via hop (the first Via line up to its first comma outside quotes) has an
 * "oc" parameter (RFC 7339: the client asks for overload feedback; "oc-algo" and the like
 * do not count): such an INVITE is handed back, and Python writes the feedback into the
 * refusal's Via (voicelab.sip.occ) */
static int top_via_has_oc(const char *p, const scan_t *s)
{
    const field_t *v = &s->f[s->first[S_VIA]];
    const char *a = p + v->off, *e = a + v->len;
    int quoted = 0;
    for (const char *q = a; q < e; q++) {
        if (*q == '"') { quoted = !quoted; continue; }
        if (quoted) { if (*q == '\\' && q + 1 < e) q++; continue; }
        if (*q == ',') return 0;
        if (*q != ';') continue;
        const char *n = q + 1;
        while (n < e && (*n == ' ' || *n == '\t')) n++;
        if (n + 2 > e || !ci_eq(n, "oc", 2)) continue;
        n += 2;
        while (n < e && (*n == ' ' || *n == '\t')) n++;
        if (n == e || *n == '=' || *n == ';' || *n == ',') return 1;
    }
    return 0;
}

static int buildable(const scan_t *s)
{
    return s->count[S_VIA] && s->count[S_FROM] && s->count[S_TO] == 1 && s->count[S_CID] && s->count[S_CSEQ];
}

#define PUT(src, n) do { memcpy(o, (src), (size_t)(n)); o += (n); } while (0)
#define PUTS(lit) PUT(lit, sizeof(lit) - 1)

/* shed.respond: the response's length, and (out != NULL) its bytes */
static Py_ssize_t build(const char *p, const scan_t *s, const char *line, Py_ssize_t line_len, const char *ra,
                        Py_ssize_t ra_len, const char *tag, Py_ssize_t tag_len, char *out)
{
    const field_t *frm = &s->f[s->first[S_FROM]], *to = &s->f[s->first[S_TO]], *cid = &s->f[s->first[S_CID]],
                  *cseq = &s->f[s->first[S_CSEQ]];
    static const char tail[] = "Server: voicelab\r\nContent-Length: 0\r\n\r\n";
    Py_ssize_t n = line_len;
    for (int i = 0; i < s->nf; i++)
        if (s->f[i].slot == S_VIA) n += 5 + s->f[i].len + 2;
    n += 6 + frm->len + 6 + to->len + 5 + tag_len + 11 + cid->len + 8 + cseq->len + 2;
    if (s->count[S_TS]) n += 11 + s->f[s->first[S_TS]].len + 2;
    if (ra != NULL) n += 13 + ra_len + 2;
    n += sizeof(tail) - 1;
    if (out == NULL) return n;
    char *o = out;
    PUT(line, line_len);
    for (int i = 0; i < s->nf; i++)
        if (s->f[i].slot == S_VIA) { PUTS("Via: "); PUT(p + s->f[i].off, s->f[i].len); PUTS("\r\n"); }
    PUTS("From: "); PUT(p + frm->off, frm->len);
    PUTS("\r\nTo: "); PUT(p + to->off, to->len); PUTS(";tag="); PUT(tag, tag_len);
    PUTS("\r\nCall-ID: "); PUT(p + cid->off, cid->len);
    PUTS("\r\nCSeq: "); PUT(p + cseq->off, cseq->len); PUTS("\r\n");
    if (s->count[S_TS]) { PUTS("Timestamp: "); PUT(p + s->f[s->first[S_TS]].off, s->f[s->first[S_TS]].len); PUTS("\r\n"); }
    if (ra != NULL) { PUTS("Retry-After: "); PUT(ra, ra_len); PUTS("\r\n"); }
    PUT(tail, sizeof(tail) - 1);
    return o - out;
}

/* retry_after (int or None) as decimal text in buf (NULL: no header); -1 on error */
static int retry_text(PyObject *ra, char *buf, const char **txt, Py_ssize_t *len)
{
    if (ra == Py_None) { *txt = NULL; *len = 0; return 0; }
    if (!PyLong_Check(ra)) {
        PyErr_Format(PyExc_TypeError, "retry_after must be an int or None, not %.100s", Py_TYPE(ra)->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(ra);
    if (v == -1 && PyErr_Occurred()) return -1;
    *len = snprintf(buf, 32, "%lld", v);
    *txt = buf;
    return 0;
}

static PyObject *str_invite, *str_shed_ack;

static PyObject *shedc_triage(PyObject *self, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    scan_t s;
    int kind = scan(b.buf, b.len, &s);
    PyObject *res = NULL;
    if (kind == K_OTHER) { res = Py_None; Py_INCREF(res); goto done; }
    if (kind == K_UNKNOWN) { res = Py_NotImplemented; Py_INCREF(res); goto done; }
    const char *p = b.buf;
    PyObject *fields = PyList_New(NSLOTS);
    if (fields == NULL) goto done;
    for (int k = 0; k < NSLOTS; k++) {
        PyObject *l = PyList_New(0);
        if (l == NULL) { Py_DECREF(fields); goto done; }
        PyList_SET_ITEM(fields, k, l);
    }
    for (int i = 0; i < s.nf; i++) {
        PyObject *v = PyBytes_FromStringAndSize(p + s.f[i].off, s.f[i].len);
        if (v == NULL || PyList_Append(PyList_GET_ITEM(fields, s.f[i].slot), v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(fields);
            goto done;
        }
        Py_DECREF(v);
    }
    const field_t *cid = &s.f[s.first[S_CID]];
    PyObject *cs = PyUnicode_DecodeASCII(p + cid->off, cid->len, NULL);
    if (cs == NULL) { Py_DECREF(fields); goto done; }
    res = PyTuple_Pack(3, kind == K_INVITE ? str_invite : str_shed_ack, cs, fields);
    Py_DECREF(cs);
    Py_DECREF(fields);
done:
    PyBuffer_Release(&b);
    return res;
}

static PyObject *shedc_refuse(PyObject *self, PyObject *args)
{
    Py_buffer b, line, tag;
    PyObject *ra;
    if (!PyArg_ParseTuple(args, "y*y*Oy*:refuse", &b, &line, &ra, &tag)) return NULL;
    PyObject *res = NULL;
    char rabuf[32];
    const char *ratxt;
    Py_ssize_t ralen;
    if (retry_text(ra, rabuf, &ratxt, &ralen) < 0) goto done;
    scan_t s;
    if (scan(b.buf, b.len, &s) != K_INVITE || !buildable(&s)) { res = Py_None; Py_INCREF(res); goto done; }
    Py_ssize_t n = build(b.buf, &s, line.buf, line.len, ratxt, ralen, tag.buf, tag.len, NULL);
    res = PyBytes_FromStringAndSize(NULL, n);
    if (res != NULL) build(b.buf, &s, line.buf, line.len, ratxt, ralen, tag.buf, tag.len, PyBytes_AS_STRING(res));
done:
    PyBuffer_Release(&b);
    PyBuffer_Release(&line);
    PyBuffer_Release(&tag);
    return res;
}

#ifdef _SHEDC_MMSG
#define BATCH 64
#define RXSZ 65536
#define TXSZ 66560

/* the buffers of one drain; decide() runs Python code, so another thread may call drain
 * meanwhile: that call gets buffers of its own (busy) */
static char rxstatic[BATCH][RXSZ];
static char txstatic[BATCH][TXSZ];
static int busy;

static PyObject *addr_tuple(const struct sockaddr_in *sa)
{
    char host[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &sa->sin_addr, host, sizeof host) == NULL) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(si)", host, (int)ntohs(sa->sin_port));
}

static int hand_back(PyObject *list, const char *data, Py_ssize_t n, const struct sockaddr_in *sa)
{
    PyObject *d = PyBytes_FromStringAndSize(data, n);
    if (d == NULL) return -1;
    PyObject *a = addr_tuple(sa);
    if (a == NULL) { Py_DECREF(d); return -1; }
    PyObject *t = PyTuple_Pack(2, d, a);
    Py_DECREF(d);
    Py_DECREF(a);
    if (t == NULL) return -1;
    int r = PyList_Append(list, t);
    Py_DECREF(t);
    return r;
}

/* drain(fd, max_n, max_bytes, decide) -> (others, received, consumed_bytes, shed_acks, refused, sent_bytes, unsent)
 *
 * One recvmmsg of up to max_n (<= 64) datagrams from the non-blocking AF_INET socket fd.
 * Per datagram, in arrival order: the ACK of one of our refusals is dropped; a new
 * INVITE (no To tag) from which a refusal can be built is shown to decide(call_id),
 * which returns None (admit: the datagram is handed back) or (status_line,
 * retry_after, tag) (the refusal is built and queued); anything else, and anything
 * over max_bytes, is handed back. The queued refusals go out in one sendmmsg to their
 * sources; what the socket did not take comes back in ``unsent`` as (bytes, addr).
 * ``others`` holds the handed-back (bytes, (host, port)) in arrival order.
 */
static PyObject *shedc_drain(PyObject *self, PyObject *args)
{
    int fd, max_n;
    Py_ssize_t max_bytes;
    PyObject *decide;
    if (!PyArg_ParseTuple(args, "iinO:drain", &fd, &max_n, &max_bytes, &decide)) return NULL;
    if (max_n < 1 || max_n > BATCH) return PyErr_Format(PyExc_ValueError, "max_n must be 1..%d", BATCH);
    PyObject *res = NULL;
    char (*rxbuf)[RXSZ] = rxstatic, (*txbuf)[TXSZ] = txstatic;
    int own = 0;
    if (busy) {
        rxbuf = PyMem_Malloc((size_t)max_n * RXSZ);
        txbuf = PyMem_Malloc((size_t)max_n * TXSZ);
        if (rxbuf == NULL || txbuf == NULL) {
            PyMem_Free(rxbuf);
            PyMem_Free(txbuf);
            return PyErr_NoMemory();
        }
        own = 1;
    } else
        busy = 1;
    struct mmsghdr rx[BATCH], tx[BATCH];
    struct iovec riov[BATCH], tiov[BATCH];
    struct sockaddr_in rsa[BATCH];
    for (int i = 0; i < max_n; i++) {
        riov[i].iov_base = rxbuf[i];
        riov[i].iov_len = RXSZ;
        memset(&rx[i].msg_hdr, 0, sizeof rx[i].msg_hdr);
        rx[i].msg_hdr.msg_name = &rsa[i];
        rx[i].msg_hdr.msg_namelen = sizeof rsa[i];
        rx[i].msg_hdr.msg_iov = &riov[i];
        rx[i].msg_hdr.msg_iovlen = 1;
    }
    int got = recvmmsg(fd, rx, (unsigned)max_n, MSG_DONTWAIT, NULL);
    PyObject *others = PyList_New(0), *unsent = PyList_New(0);
    if (others == NULL || unsent == NULL) goto fail;
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) got = 0;
        else { PyErr_SetFromErrno(PyExc_OSError); goto fail; }
    }
    long long consumed = 0, sent_bytes = 0;
    int acks = 0, refused = 0, ntx = 0;
    for (int i = 0; i < got; i++) {
        const char *p = rxbuf[i];
        Py_ssize_t n = (Py_ssize_t)rx[i].msg_len;
        scan_t s;
        int kind = K_OTHER;
        if (n <= max_bytes && !(rx[i].msg_hdr.msg_flags & MSG_TRUNC) && rx[i].msg_hdr.msg_namelen == sizeof(struct sockaddr_in)
            && rsa[i].sin_family == AF_INET)
            kind = scan(p, n, &s);
        if (kind == K_SHED_ACK) { acks++; consumed += n; continue; }
        if (kind == K_INVITE && buildable(&s) && !top_via_has_oc(p, &s)) {
            const field_t *cid = &s.f[s.first[S_CID]];
            PyObject *cs = PyUnicode_DecodeASCII(p + cid->off, cid->len, NULL);
            if (cs == NULL) goto fail;
            PyObject *r = PyObject_CallOneArg(decide, cs);
            Py_DECREF(cs);
            if (r == NULL) { /* a bug in decide: reported; the datagram goes the Python way (which reports it too) */
                PyErr_WriteUnraisable(decide);
                r = Py_None;
                Py_INCREF(r);
            }
            if (r != Py_None) {
                PyObject *line, *ra, *tag;
                char rabuf[32];
                const char *ratxt;
                Py_ssize_t ralen;
                if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 3 || !PyBytes_Check(line = PyTuple_GET_ITEM(r, 0))
                    || !PyBytes_Check(tag = PyTuple_GET_ITEM(r, 2))) {
                    Py_DECREF(r);
                    PyErr_SetString(PyExc_TypeError, "decide must return None or (bytes, int | None, bytes)");
                    goto fail;
                }
                ra = PyTuple_GET_ITEM(r, 1);
                if (retry_text(ra, rabuf, &ratxt, &ralen) < 0) { Py_DECREF(r); goto fail; }
                Py_ssize_t len = build(p, &s, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), ratxt, ralen,
                                       PyBytes_AS_STRING(tag), PyBytes_GET_SIZE(tag), NULL);
                if (len <= TXSZ) {
                    build(p, &s, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), ratxt, ralen, PyBytes_AS_STRING(tag),
                          PyBytes_GET_SIZE(tag), txbuf[ntx]);
                    tiov[ntx].iov_base = txbuf[ntx];
                    tiov[ntx].iov_len = (size_t)len;
                    memset(&tx[ntx].msg_hdr, 0, sizeof tx[ntx].msg_hdr);
                    tx[ntx].msg_hdr.msg_name = &rsa[i];
                    tx[ntx].msg_hdr.msg_namelen = sizeof rsa[i];
                    tx[ntx].msg_hdr.msg_iov = &tiov[ntx];
                    tx[ntx].msg_hdr.msg_iovlen = 1;
                    ntx++;
                } else { /* (a status line or tag that large: Python sends it) */
                    PyObject *big = PyBytes_FromStringAndSize(NULL, len);
                    if (big == NULL) { Py_DECREF(r); goto fail; }
                    build(p, &s, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), ratxt, ralen, PyBytes_AS_STRING(tag),
                          PyBytes_GET_SIZE(tag), PyBytes_AS_STRING(big));
                    int e = hand_back(unsent, PyBytes_AS_STRING(big), len, &rsa[i]);
                    Py_DECREF(big);
                    if (e < 0) { Py_DECREF(r); goto fail; }
                }
                Py_DECREF(r);
                refused++;
                consumed += n;
                continue;
            }
            Py_DECREF(r);
        }
        if (hand_back(others, p, n, &rsa[i]) < 0) goto fail;
    }
    int done = 0;
    while (done < ntx) {
        int k = sendmmsg(fd, tx + done, (unsigned)(ntx - done), MSG_DONTWAIT);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        for (int j = done; j < done + k; j++) sent_bytes += tx[j].msg_len;
        done += k;
    }
    for (int j = done; j < ntx; j++) /* the socket's buffer is full (or an error): Python queues them */
        if (hand_back(unsent, tiov[j].iov_base, (Py_ssize_t)tiov[j].iov_len, tx[j].msg_hdr.msg_name) < 0) goto fail;
    res = Py_BuildValue("(NiLiiLN)", others, got, consumed, acks, refused, sent_bytes, unsent);
    goto out;
fail:
    Py_XDECREF(others);
    Py_XDECREF(unsent);
    res = NULL;
out:
    if (own) {
        PyMem_Free(rxbuf);
        PyMem_Free(txbuf);
    } else
        busy = 0;
    return res;
}
#endif

static PyMethodDef methods[] = {
    {"triage", shedc_triage, METH_O, "shed.triage in C (NotImplemented: ask the Python version)."},
    {"refuse", shedc_refuse, METH_VARARGS,
     "refuse(data, line, retry_after, tag): shed.respond(shed.triage(data)[2], ...) for a new INVITE, else None."},
#ifdef _SHEDC_MMSG
    {"drain", shedc_drain, METH_VARARGS, "drain(fd, max_n, max_bytes, decide): see the module's source."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_shedc", "C accelerator of voicelab.sip.shed.", -1, methods};

PyMODINIT_FUNC PyInit__shedc(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    str_invite = PyUnicode_InternFromString("invite");
    str_shed_ack = PyUnicode_InternFromString("shed-ack");
    if (str_invite == NULL || str_shed_ack == NULL) { Py_DECREF(m); return NULL; }
    if (PyModule_AddIntConstant(m, "BATCH",
#ifdef _SHEDC_MMSG
                                BATCH
#else
                                0
#endif
                                ) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
