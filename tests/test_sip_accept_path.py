"""The accepted call's fast paths give what the general code gives (issue #10, CPU per call).

Three shortcuts read the common case with one regular expression each and leave
everything else to the general code: the header section (``message._parse_head``), a
Via hop (``headers._fast_via``) and a name-addr (``headers._fast_name_addr``). Each test
here generates inputs around the shortcut's edges (white space, quotes, ``received``,
odd hosts and ports, folds, bad names) and checks that whenever the shortcut answers,
the general code answers the same, and that an error is the same error.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicelab.errors import RemoteProtocolError
from voicelab.sip import parse_message
from voicelab.sip.headers import _fast_name_addr, _fast_via, _scan_name_addr, _scan_via
from voicelab.sip.message import Limits

from .test_sip_shed import SIPP_INVITE as _SIPP_INVITE  # SIPp's INVITE, byte for byte

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_tokens = st.sampled_from(["SIP", "2.0", "UDP", "tcp", "x-y", "a.b", "z9hG4bK-1-0", "Tag%1", "q", "ttl", "rport",
                           "maddr", "branch", "received", "ReCeIvEd", "tag", "expires", "lr", "~'`", ""])
_hosts = st.sampled_from(["127.0.0.1", "host.example.com", "[2001:db8::1]", "[::1]", "[zz]", "1.2.3.999", "-bad",
                          "a..b", "host-", "ex.com.", "999.1.1.1", "h_x", ""])
_ports = st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":99999", ":123456", ": 5060", ":x"])
_values = st.sampled_from(["", "=1", "=255", "=256", "=abc", "=z9hG4bK77", "=[::1]", "=1.2.3.4", "=::1", '="q"',
                           "= 5", "=a b", "=", "=70000", "=12x", "=[1.2.3.4]", "=\"\\\"\""])
_seps = st.sampled_from([";", " ;", "; ", ";;", ",", " "])
_params = st.lists(st.tuples(_seps, _tokens, _values), max_size=4).map(lambda ps: "".join(s + t + v for s, t, v in ps))


def _same(fast_fn, scan_fn, text, *what):
    """Run both; the fast one may decline (None). When it answers (or raises), the
    scanner answers the same (or raises the same message)."""
    args = (text, *what)
    try:
        fast = fast_fn(text)
    except RemoteProtocolError as exc:
        try:
            scan_fn(*args)
        except RemoteProtocolError as exc2:
            assert str(exc) == str(exc2)
            return "raised"
        raise AssertionError(f"fast path raised {exc} but the scanner accepted {args!r}") from None
    if fast is None:
        return "declined"
    slow = scan_fn(*args)
    assert repr(fast) == repr(slow)
    assert fast == slow
    return "answered"


@FAST
@given(_tokens, _tokens, _tokens, st.sampled_from([" ", "  ", "\t", ""]), _hosts, _ports, _params,
       st.sampled_from(["", " ", "x"]))  # fmt: skip
def test_fast_via_is_the_scanners_via(name, version, transport, space, host, port, params, tail):
    text = f"{name}/{version}/{transport}{space}{host}{port}{params}{tail}"
    _same(_fast_via, _scan_via, text)


def test_fast_via_answers_the_common_hops():
    for text in ("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-1-0", "SIP/2.0/TCP [2001:db8::1];branch=z9hG4bKx;rport",
                 "SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776;ttl=16;maddr=224.2.0.1;rport=5066"):  # fmt: skip
        assert _same(_fast_via, _scan_via, text) == "answered", text
    # received has its own value rule in the scanner: the fast path leaves it
    assert _fast_via("SIP/2.0/UDP h;branch=z9hG4bK1;Received=1.2.3.4") is None


_displays = st.sampled_from(["", "sipp ", "Alice Smith ", "A  B", '"Quoted" ', "x\t", "bad,name ", "<"])
_inner = st.sampled_from(["sip:sipp@127.0.0.1:5070", "sip:a@[::1]", "sips:b@example.com;transport=tcp", "tel:+123",
                          "sip:a b@c", "sip:", "http://x/y", "sip:a@b?h=1", " sip:a@b", "sip:a@b>", "mailto:a@b"])
_closing = st.sampled_from([">", "> ", ">x", ""])


@FAST
@given(_displays, _inner, _closing, _params)
def test_fast_name_addr_is_the_scanners_name_addr(display, inner, closing, params):
    text = f"{display}<{inner}{closing}{params}"
    _same(_fast_name_addr, _scan_name_addr, text, "To")


def test_fast_name_addr_answers_the_common_forms():
    for text in ("sipp <sip:sipp@127.0.0.1:5070>;tag=4242SIPpTag001", "<sip:service@127.0.0.1:5060>",
                 "Alice Smith <sips:a@example.com>;tag=1;x", "<sip:b@[2001:db8::1]:5061;transport=tls>;tag=z"):  # fmt: skip
        assert _same(_fast_name_addr, _scan_name_addr, text, "From") == "answered", text


_names = st.sampled_from(["Via", "v", "From", "To", "Call-ID", "CSeq", "Contact", "X-Y", "Subject", "Max-Forwards",
                          "Bad Name", "Bad@", "", "Content-Length"])
_field_values = st.sampled_from(["SIP/2.0/UDP h;branch=z9hG4bK1", "<sip:a@b>;tag=1", "1 INVITE", "x@y", "", " padded ",
                                 "tab\tinside", "a:b", "70", "0", "é unicode"])
_colon = st.sampled_from([":", " :", ": ", ":\t", "", "\t:"])
_lines = st.lists(
    st.one_of(
        st.tuples(_names, _colon, _field_values).map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
        st.sampled_from([" folded", "\tfolded", "bare\rcr", "bare\nlf", "no colon here"]),
    ),
    max_size=10,
)


@FAST
@given(st.sampled_from(["OPTIONS sip:a@b SIP/2.0", "SIP/2.0 200 OK", "INVITE sip:a@b SIP/2.0"]), _lines)
def test_one_regex_header_section_is_the_line_loop(start, lines):
    head = "\r\n".join([start, *lines])
    data = (head + "\r\n\r\n").encode()
    # A header-line limit just under the section's length sends it through the line loop
    # (no single line reaches that limit), the default limits through the regex.
    slow_limits = Limits(max_header_line=max(len(head) - 1, 1))
    outcomes = []
    for limits in (Limits(), slow_limits):
        try:
            msg = parse_message(data, validate=False, limits=limits)
            outcomes.append([(f.name, f.value, f.raw, f.key) for f in msg.headers])
        except RemoteProtocolError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


_IN_DIALOG = (
    b"%s sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-7-%d\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag007\r\nTo: service <sip:service@127.0.0.1:5060>;tag=%s\r\n"
    b"Call-ID: 7-4242@127.0.0.1\r\nCSeq: %d %s\r\nContact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\n"
    b"Subject: Performance Test\r\nContent-Length: 0\r\n\r\n"
)
# What the UA sent for this call before the fast paths existed (main at 57fee72, rng seed 7).
_TRYING = (
    b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-7-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag007\r\nTo: service <sip:service@127.0.0.1:5060>\r\n"
    b"Call-ID: 7-4242@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)
_OK_INVITE = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-7-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag007\r\n"
    b"To: service <sip:service@127.0.0.1:5060>;tag=8b4ae5f1a941\r\nCall-ID: 7-4242@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
    b"Contact: <sip:service@127.0.0.1:5060>\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO\r\nServer: voicelab\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 143\r\n\r\n"
    b"v=0\r\no=- 1469265226 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
)
_OK_BYE = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-7-7\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag007\r\n"
    b"To: service <sip:service@127.0.0.1:5060>;tag=8b4ae5f1a941\r\nCall-ID: 7-4242@127.0.0.1\r\nCSeq: 2 BYE\r\n"
    b"Server: voicelab\r\nContent-Length: 0\r\n\r\n"
)


def test_sipp_accepted_call_golden_bytes():
    """SIPp's call through the UA (INVITE, 100, 200 with SDP, ACK, BYE, 200): the same
    bytes, byte for byte, as before the accepted path was made cheaper."""
    from voicelab.sip.ua import IncomingCall, UserAgent

    ua = UserAgent(local_uri="sip:service@127.0.0.1:5060", local_addr=("127.0.0.1", 5060), rng=7, codecs=["pcmu"])
    src = ("127.0.0.1", 5061)
    ua.receive(_SIPP_INVITE, src, 1.0)
    sent = ua.datagrams_to_send()
    events = []
    while (ev := ua.next_event()) is not None:
        events.append(ev)
    (call,) = [ev.call for ev in events if isinstance(ev, IncomingCall)]
    ua.answer(call, 200, now=1.001)
    sent += ua.datagrams_to_send()
    tag = call._local_tag.encode()
    ua.receive(_IN_DIALOG % (b"ACK", 5, tag, 1, b"ACK"), src, 1.002)
    sent += ua.datagrams_to_send()
    ua.receive(_IN_DIALOG % (b"BYE", 7, tag, 2, b"BYE"), src, 1.003)
    sent += ua.datagrams_to_send()
    assert sent == [(_TRYING, src), (_OK_INVITE, src), (_OK_BYE, src)]


def test_transaction_key_hash_is_cached_but_not_pickled():
    """A key computes its hash once; a pickled key leaves it behind (another process
    hashes strings with another seed), and still finds its table entry after a round trip."""
    import copy
    import pickle

    from voicelab.sip.transaction import TransactionKey

    k = TransactionKey("server", "INVITE", "z9hg4bk-1", ("127.0.0.1", 5061))
    table = {k: "tx"}
    assert "_hash" in k.__dict__ and hash(k) == hash(("server", "INVITE", "z9hg4bk-1", ("127.0.0.1", 5061), None))
    for twin in (pickle.loads(pickle.dumps(k)), copy.deepcopy(k)):
        assert "_hash" not in twin.__dict__
        assert twin == k and table[twin] == "tx"
