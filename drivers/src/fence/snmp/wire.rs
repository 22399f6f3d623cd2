//! BER encoding of the requests this driver sends, and the few reads of incoming messages that
//! must happen before (or instead of) snmp2's own parser.
//!
//! snmp2 keeps its message builders crate-private and ties them to its own socket handling, which
//! has no timeouts, no resends and no way to skip a stale datagram. So requests are written here:
//! v2c completely, v3 as an unauthenticated message that snmp2 then reads back and re-encodes with
//! authentication and privacy (its crypto is the part worth reusing). Incoming v3 messages are
//! first read here for the message id and for REPORTs, which snmp2 reduces to an opaque
//! "not authenticated" error although the report's counter OID says exactly what went wrong.

use snmp2::asn1::{self, AsnReader};
use snmp2::snmp;

use super::session::Oid;

/// A value in an outgoing varbind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutValue {
    /// NULL, for GET, GETNEXT and GETBULK.
    Null,
    /// INTEGER, for SET.
    Int(i64),
}

/// Fields of a request PDU.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestPdu<'a> {
    /// `snmp::MSG_GET`, `MSG_GET_NEXT`, `MSG_GET_BULK` or `MSG_SET`.
    pub(super) tag: u8,
    pub(super) request_id: i32,
    /// error-status, or non-repeaters for GETBULK.
    pub(super) field2: i64,
    /// error-index, or max-repetitions for GETBULK.
    pub(super) field3: i64,
    pub(super) varbinds: &'a [(Oid, OutValue)],
}

/// USM header fields of an outgoing v3 message.
#[derive(Debug, Clone, Copy)]
pub(super) struct UsmHeader<'a> {
    pub(super) engine_id: &'a [u8],
    pub(super) boots: i64,
    pub(super) time: i64,
    pub(super) username: &'a [u8],
}

/// A complete v2c message.
pub(super) fn v2c_message(community: &[u8], pdu: &RequestPdu<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    integer(1, &mut body);
    octets(community, &mut body);
    request_pdu(pdu, &mut body);
    let mut out = Vec::with_capacity(body.len() + 4);
    tlv(asn1::TYPE_SEQUENCE, &body, &mut out);
    out
}

/// A v3 message without authentication or privacy (flags: reportable only). Sent as it is for
/// engine-id discovery; otherwise handed to snmp2 to be signed and encrypted.
pub(super) fn v3_plain_message(usm: &UsmHeader<'_>, pdu: &RequestPdu<'_>) -> Vec<u8> {
    let mut header = Vec::with_capacity(16);
    integer(i64::from(pdu.request_id), &mut header);
    integer(V3_MAX_SIZE, &mut header);
    octets(&[snmp::V3_MSG_FLAGS_REPORTABLE], &mut header);
    integer(USM_SECURITY_MODEL, &mut header);

    let mut params = Vec::with_capacity(64);
    octets(usm.engine_id, &mut params);
    integer(usm.boots, &mut params);
    integer(usm.time, &mut params);
    octets(usm.username, &mut params);
    octets(&[], &mut params);
    octets(&[], &mut params);
    let mut params_seq = Vec::with_capacity(params.len() + 4);
    tlv(asn1::TYPE_SEQUENCE, &params, &mut params_seq);

    let mut scoped = Vec::with_capacity(64);
    octets(usm.engine_id, &mut scoped);
    octets(&[], &mut scoped);
    request_pdu(pdu, &mut scoped);

    let mut body = Vec::with_capacity(128);
    integer(3, &mut body);
    tlv(asn1::TYPE_SEQUENCE, &header, &mut body);
    octets(&params_seq, &mut body);
    tlv(asn1::TYPE_SEQUENCE, &scoped, &mut body);
    let mut out = Vec::with_capacity(body.len() + 4);
    tlv(asn1::TYPE_SEQUENCE, &body, &mut out);
    out
}

/// What can be read from a v3 message without keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct V3Envelope {
    pub(super) msg_id: i64,
    pub(super) flags: u8,
    pub(super) engine_id: Vec<u8>,
    pub(super) boots: i64,
    pub(super) time: i64,
    /// The first varbind's OID when the message is a plaintext REPORT.
    pub(super) report: Option<Oid>,
}

/// Reads the header of a v3 message; `None` when it is not one (the datagram is dropped).
pub(super) fn v3_envelope(bytes: &[u8]) -> Option<V3Envelope> {
    let mut outer = AsnReader::from_bytes(bytes);
    let mut msg = AsnReader::from_bytes(outer.read_raw(asn1::TYPE_SEQUENCE).ok()?);
    if msg.read_asn_integer().ok()? != 3 {
        return None;
    }
    let mut header = AsnReader::from_bytes(msg.read_raw(asn1::TYPE_SEQUENCE).ok()?);
    let msg_id = header.read_asn_integer().ok()?;
    let _max_size = header.read_asn_integer().ok()?;
    let flags = header.read_asn_octetstring().ok()?.first().copied()?;
    if header.read_asn_integer().ok()? != USM_SECURITY_MODEL {
        return None;
    }
    let params = msg.read_asn_octetstring().ok()?;
    let mut params = AsnReader::from_bytes(
        AsnReader::from_bytes(params)
            .read_raw(asn1::TYPE_SEQUENCE)
            .ok()?,
    );
    let engine_id = params.read_asn_octetstring().ok()?.to_vec();
    let boots = params.read_asn_integer().ok()?;
    let time = params.read_asn_integer().ok()?;
    let mut report = None;
    if flags & snmp::V3_MSG_FLAGS_PRIVACY == 0 {
        let mut scoped = AsnReader::from_bytes(msg.read_raw(asn1::TYPE_SEQUENCE).ok()?);
        let _context_engine = scoped.read_asn_octetstring().ok()?;
        let _context_name = scoped.read_asn_octetstring().ok()?;
        if scoped.peek_byte().ok()? == snmp::MSG_REPORT {
            let mut pdu = AsnReader::from_bytes(scoped.read_raw(snmp::MSG_REPORT).ok()?);
            let _request_id = pdu.read_asn_integer().ok()?;
            let _status = pdu.read_asn_integer().ok()?;
            let _index = pdu.read_asn_integer().ok()?;
            let mut varbinds = snmp2::Varbinds::from_bytes(pdu.read_raw(asn1::TYPE_SEQUENCE).ok()?);
            report = Some(match varbinds.next() {
                Some((oid, _)) => Oid::from_snmp2(&oid)?,
                // A report without a varbind still says "not accepted"; an empty OID names it.
                None => Oid::empty_report(),
            });
        }
    }
    Some(V3Envelope {
        msg_id,
        flags,
        engine_id,
        boots,
        time,
        report,
    })
}

/// Whether a datagram claims to be a v3 message.
pub(super) fn is_v3(bytes: &[u8]) -> bool {
    let mut outer = AsnReader::from_bytes(bytes);
    let Ok(seq) = outer.read_raw(asn1::TYPE_SEQUENCE) else {
        return false;
    };
    AsnReader::from_bytes(seq).read_asn_integer().ok() == Some(3)
}

fn request_pdu(pdu: &RequestPdu<'_>, out: &mut Vec<u8>) {
    let mut list = Vec::with_capacity(pdu.varbinds.len() * 24);
    for (oid, value) in pdu.varbinds {
        let mut vb = Vec::with_capacity(24);
        tlv(asn1::TYPE_OBJECTIDENTIFIER, &oid_content(oid), &mut vb);
        match value {
            OutValue::Null => tlv(asn1::TYPE_NULL, &[], &mut vb),
            OutValue::Int(n) => integer(*n, &mut vb),
        }
        tlv(asn1::TYPE_SEQUENCE, &vb, &mut list);
    }
    let mut body = Vec::with_capacity(list.len() + 16);
    integer(i64::from(pdu.request_id), &mut body);
    integer(pdu.field2, &mut body);
    integer(pdu.field3, &mut body);
    tlv(asn1::TYPE_SEQUENCE, &list, &mut body);
    tlv(pdu.tag, &body, out);
}

/// BER content octets of an OID. [`Oid`] guarantees at least two arcs with a valid first pair.
pub(super) fn oid_content(oid: &Oid) -> Vec<u8> {
    let arcs = oid.arcs();
    let mut out = Vec::with_capacity(arcs.len() + 4);
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (u64::from(*a) * 40 + u64::from(*b), rest),
        _ => return out,
    };
    base128(first, &mut out);
    for arc in rest {
        base128(u64::from(*arc), &mut out);
    }
    out
}

fn base128(mut n: u64, out: &mut Vec<u8>) {
    let mut groups = [0u8; 10];
    let mut len = 0;
    loop {
        groups[len] = (n & 0x7f) as u8;
        len += 1;
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    for i in (0..len).rev() {
        let more = if i == 0 { 0 } else { 0x80 };
        out.push(groups[i] | more);
    }
}

fn integer(n: i64, out: &mut Vec<u8>) {
    let bytes = n.to_be_bytes();
    // Shortest two's-complement form: drop leading bytes that only repeat the sign.
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    tlv(asn1::TYPE_INTEGER, &bytes[start..], out);
}

fn octets(bytes: &[u8], out: &mut Vec<u8>) {
    tlv(asn1::TYPE_OCTETSTRING, bytes, out);
}

fn tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    match u8::try_from(content.len()) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = content.len().to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            // At most size_of::<usize>() length octets, so the count fits in the low 7 bits.
            out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0x7f));
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    out.extend_from_slice(content);
}

/// msgMaxSize we announce: what snmp2 accepts in a reply.
const V3_MAX_SIZE: i64 = 65_507;
/// The User-based Security Model (RFC 3414).
const USM_SECURITY_MODEL: i64 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(s: &str) -> Oid {
        Oid::parse(s).expect("test OID")
    }

    #[test]
    fn integers_are_minimal_twos_complement() {
        let enc = |n| {
            let mut v = Vec::new();
            integer(n, &mut v);
            v
        };
        assert_eq!(enc(0), [2, 1, 0]);
        assert_eq!(enc(1), [2, 1, 1]);
        assert_eq!(enc(127), [2, 1, 0x7f]);
        assert_eq!(enc(128), [2, 2, 0, 0x80]);
        assert_eq!(enc(-1), [2, 1, 0xff]);
        assert_eq!(enc(-128), [2, 1, 0x80]);
        assert_eq!(enc(-129), [2, 2, 0xff, 0x7f]);
        assert_eq!(enc(65_507), [2, 3, 0, 0xff, 0xe3]);
    }

    #[test]
    fn oids_encode_like_net_snmp() {
        // 1.3.6.1.4.1.318 -> 2b 06 01 04 01 82 3e
        assert_eq!(
            oid_content(&oid("1.3.6.1.4.1.318")),
            [0x2b, 6, 1, 4, 1, 0x82, 0x3e]
        );
        assert_eq!(
            oid_content(&oid(".1.3.6.1.4.1.13742")),
            [0x2b, 6, 1, 4, 1, 0xeb, 0x2e]
        );
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let mut v = Vec::new();
        tlv(4, &[0u8; 300], &mut v);
        assert_eq!(&v[..4], &[4, 0x82, 0x01, 0x2c]);
        assert_eq!(v.len(), 304);
    }

    #[test]
    fn v2c_messages_parse_back_with_snmp2() {
        let varbinds = [(oid("1.3.6.1.4.1.318.1.1.4.4.2.1.3.5"), OutValue::Int(2))];
        let bytes = v2c_message(
            b"private",
            &RequestPdu {
                tag: snmp::MSG_SET,
                request_id: 4711,
                field2: 0,
                field3: 0,
                varbinds: &varbinds,
            },
        );
        let pdu = snmp2::Pdu::from_bytes(&bytes).expect("parses");
        assert_eq!(pdu.req_id, 4711);
        assert_eq!(pdu.community, b"private");
        assert_eq!(pdu.message_type, snmp2::MessageType::SetRequest);
        let (name, value) = pdu.varbinds.clone().next().expect("one varbind");
        assert_eq!(Oid::from_snmp2(&name), Some(varbinds[0].0.clone()));
        assert!(matches!(value, snmp2::Value::Integer(2)));
        assert!(!is_v3(&bytes));
    }

    #[test]
    fn v3_discovery_message_has_an_empty_engine_id() {
        let bytes = v3_plain_message(
            &UsmHeader {
                engine_id: &[],
                boots: 0,
                time: 0,
                username: &[],
            },
            &RequestPdu {
                tag: snmp::MSG_GET,
                request_id: 9,
                field2: 0,
                field3: 0,
                varbinds: &[],
            },
        );
        assert!(is_v3(&bytes));
        let env = v3_envelope(&bytes).expect("reads back");
        assert_eq!(env.msg_id, 9);
        assert_eq!(env.flags, snmp::V3_MSG_FLAGS_REPORTABLE);
        assert!(env.engine_id.is_empty());
        assert_eq!(env.report, None);
    }

    #[test]
    fn v3_reports_name_their_counter() {
        let varbinds = [(oid("1.3.6.1.6.3.15.1.1.5.0"), OutValue::Int(3))];
        let bytes = v3_plain_message(
            &UsmHeader {
                engine_id: b"\x80\x00\x1f\x88\x04",
                boots: 2,
                time: 77,
                username: b"fenceuser",
            },
            &RequestPdu {
                tag: snmp::MSG_REPORT,
                request_id: 12,
                field2: 0,
                field3: 0,
                varbinds: &varbinds,
            },
        );
        let env = v3_envelope(&bytes).expect("reads back");
        assert_eq!(env.msg_id, 12);
        assert_eq!((env.boots, env.time), (2, 77));
        assert_eq!(env.report, Some(varbinds[0].0.clone()));
    }

    #[test]
    fn garbage_is_not_a_v3_message() {
        assert_eq!(v3_envelope(&[]), None);
        assert_eq!(v3_envelope(&[0x30, 0x03, 0x02, 0x01]), None);
        assert_eq!(v3_envelope(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        assert!(!is_v3(&[0xff; 8]));
    }
}
