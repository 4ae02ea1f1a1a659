"""A raw Kafka-protocol reader of record-batch headers, control batches included.

A read_committed consumer on Apache Kafka decides which records to hide from
the transaction markers (control batches, COMMIT or ABORT) that the broker
writes into each partition when a transaction ends. librdkafka never shows
those batches, so this module fetches the partition with Fetch v4
(read_uncommitted) and walks the RecordBatch v2 headers itself: for every
offset it tells whether the record belongs to a committed transaction, an
aborted one, a transaction still open, or no transaction at all.
"""
import socket
import struct

COMMITTED, ABORTED, OPEN, PLAIN = "committed", "aborted", "open", "plain"


def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _fetch(sock, topic, partition, offset, correlation):
    body = struct.pack(">iiiib", -1, 100, 1, 32 << 20, 0)  # replica, wait, min, max bytes, read_uncommitted
    body += struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 32 << 20)
    req = struct.pack(">hhi", 1, 4, correlation) + _string("journey-tests-raw") + body
    sock.sendall(struct.pack(">i", len(req)) + req)
    size = struct.unpack(">i", _recv(sock, 4))[0]
    buf = _recv(sock, size)
    pos = 4 + 4  # correlation id, throttle time
    (topics,) = struct.unpack_from(">i", buf, pos)
    pos += 4
    assert topics == 1
    (tlen,) = struct.unpack_from(">h", buf, pos)
    pos += 2 + tlen + 4  # topic name, partition count
    _part, err, high, _lso = struct.unpack_from(">ihqq", buf, pos)
    pos += 22
    if err:
        raise RuntimeError(f"fetch {topic}/{partition}@{offset}: error code {err}")
    (aborted,) = struct.unpack_from(">i", buf, pos)
    pos += 4 + max(aborted, 0) * 16
    (rlen,) = struct.unpack_from(">i", buf, pos)
    pos += 4
    return high, buf[pos:pos + max(rlen, 0)]


def _recv(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        out += chunk
    return bytes(out)


def batches(bootstrap, topic, partition):
    """Yields (base_offset, last_offset, producer_id, epoch, transactional, control_type) per batch.

    control_type is None for data batches, 0 for ABORT and 1 for COMMIT markers.
    """
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    try:
        offset, correlation = 0, 0
        while True:
            correlation += 1
            high, records = _fetch(sock, topic, partition, offset, correlation)
            q, progressed = 0, False
            while q + 61 <= len(records):
                base, blen = struct.unpack_from(">qi", records, q)
                if q + 12 + blen > len(records):
                    break  # a partial batch at the end of the response
                attrs, last_delta = struct.unpack_from(">hi", records, q + 21)
                pid, epoch = struct.unpack_from(">qh", records, q + 43)
                control = None
                if attrs & 0x20:
                    # One control record: length, attributes, timestamp delta,
                    # offset delta (varints), key length (varint), then the
                    # key: version int16, type int16.
                    r = q + 61
                    for _ in range(4):
                        r = _skip_varint(records, r)
                    r = _skip_varint(records, r)
                    (_version, control) = struct.unpack_from(">hh", records, r)
                yield base, base + last_delta, pid, epoch, bool(attrs & 0x10), control
                offset = base + last_delta + 1
                progressed = True
                q += 12 + blen
            if offset >= high or not progressed:
                if offset < high and not progressed:
                    raise RuntimeError(f"no progress reading {topic}/{partition} at {offset} (high {high})")
                return
    finally:
        sock.close()


def _skip_varint(buf, pos):
    while buf[pos] & 0x80:
        pos += 1
    return pos + 1


def outcomes(bootstrap, topic, partition):
    """Maps every data offset of the partition to COMMITTED, ABORTED, OPEN or PLAIN."""
    result, pending = {}, {}
    for base, last, pid, _epoch, transactional, control in batches(bootstrap, topic, partition):
        if control is not None:
            verdict = COMMITTED if control == 1 else ABORTED
            for b, l in pending.pop(pid, []):
                for o in range(b, l + 1):
                    result[o] = verdict
        elif transactional:
            pending.setdefault(pid, []).append((base, last))
        else:
            for o in range(base, last + 1):
                result[o] = PLAIN
    for ranges in pending.values():
        for b, l in ranges:
            for o in range(b, l + 1):
                result[o] = OPEN
    return result
