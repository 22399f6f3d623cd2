//! The RMCP+ cryptography: cipher suites, the RAKP key exchange codes, session keys, packet
//! integrity and payload confidentiality (IPMI v2.0 rev 1.1, sections 13.28–13.32).
//!
//! Pure functions of their inputs, so known-answer tests can pin every value against an
//! independent implementation (`drivers/tests/kat/ipmi_kat.py`). Authentication and integrity
//! use the same hash family within a suite: SHA-1 for suites 1–3, SHA-256 for 15–17.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::codec::{Algorithms, DecodeError};

/// A cipher suite this driver implements (IPMI v2.0 table 22-20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSuite {
    /// Suite id as in configuration and in `ipmitool -C`.
    pub id: u8,
    /// Hash of the RAKP authentication algorithm (and of the integrity algorithm, if any).
    pub hash: Hash,
    /// The session carries an integrity trailer.
    pub integrity: bool,
    /// The payloads are AES-CBC-128 encrypted.
    pub confidentiality: bool,
}

/// The hash family of a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96.
    Sha1,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128.
    Sha256,
}

impl CipherSuite {
    /// The suite with this id, if implemented. Suite 0 (no authentication at all) and the MD5
    /// suites are not.
    pub fn from_id(id: u8) -> Option<Self> {
        let (hash, integrity, confidentiality) = match id {
            1 => (Hash::Sha1, false, false),
            2 => (Hash::Sha1, true, false),
            3 => (Hash::Sha1, true, true),
            15 => (Hash::Sha256, false, false),
            16 => (Hash::Sha256, true, false),
            17 => (Hash::Sha256, true, true),
            _ => return None,
        };
        Some(Self {
            id,
            hash,
            integrity,
            confidentiality,
        })
    }

    /// The algorithm numbers Open Session proposes for this suite.
    pub fn algorithms(&self) -> Algorithms {
        let (auth, integrity) = match self.hash {
            Hash::Sha1 => (AUTH_RAKP_HMAC_SHA1, INTEGRITY_HMAC_SHA1_96),
            Hash::Sha256 => (AUTH_RAKP_HMAC_SHA256, INTEGRITY_HMAC_SHA256_128),
        };
        Algorithms {
            auth,
            integrity: if self.integrity {
                integrity
            } else {
                INTEGRITY_NONE
            },
            confidentiality: if self.confidentiality {
                CONF_AES_CBC_128
            } else {
                CONF_NONE
            },
        }
    }

    /// Length of the RAKP 2/3 key exchange auth codes (the full HMAC).
    pub fn rakp_code_len(&self) -> usize {
        match self.hash {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }

    /// Length of the RAKP 4 integrity check value and of packet auth codes (truncated HMAC).
    pub fn icv_len(&self) -> usize {
        match self.hash {
            Hash::Sha1 => 12,
            Hash::Sha256 => 16,
        }
    }

    /// Length of the auth code of session packets: zero without integrity.
    pub fn packet_auth_code_len(&self) -> usize {
        if self.integrity {
            self.icv_len()
        } else {
            0
        }
    }
}

/// The values both sides exchange during RAKP, over which the codes are computed.
#[derive(Debug, Clone)]
pub struct RakpInputs<'a> {
    /// The remote console's session id (SIDc).
    pub console_session_id: u32,
    /// The BMC's session id (SIDm).
    pub bmc_session_id: u32,
    /// The remote console's random number (Rc).
    pub console_random: [u8; 16],
    /// The BMC's random number (Rm).
    pub bmc_random: [u8; 16],
    /// The BMC's GUID (GUIDm).
    pub bmc_guid: [u8; 16],
    /// The role byte sent in RAKP 1: privilege plus the name-only lookup bit (ROLEm).
    pub role: u8,
    /// The username (UNAMEm).
    pub username: &'a [u8],
}

/// RAKP 2 key exchange auth code, which the BMC sends: HMAC_Kuid(SIDc, SIDm, Rc, Rm, GUIDm,
/// ROLEm, ULENGTHm, UNAMEm).
pub fn rakp2_code(hash: Hash, kuid: &[u8], i: &RakpInputs<'_>) -> Vec<u8> {
    hmac(
        hash,
        kuid,
        &[
            &i.console_session_id.to_le_bytes(),
            &i.bmc_session_id.to_le_bytes(),
            &i.console_random,
            &i.bmc_random,
            &i.bmc_guid,
            &[i.role, username_len(i.username)],
            i.username,
        ],
    )
}

/// RAKP 3 key exchange auth code, which we send: HMAC_Kuid(Rm, SIDc, ROLEm, ULENGTHm, UNAMEm).
pub fn rakp3_code(hash: Hash, kuid: &[u8], i: &RakpInputs<'_>) -> Vec<u8> {
    hmac(
        hash,
        kuid,
        &[
            &i.bmc_random,
            &i.console_session_id.to_le_bytes(),
            &[i.role, username_len(i.username)],
            i.username,
        ],
    )
}

/// Session integrity key: HMAC_KG(Rc, Rm, ROLEm, ULENGTHm, UNAMEm). Without a BMC key (KG)
/// configured, KG is the user's password (Kuid).
pub fn sik(hash: Hash, kg: &[u8], i: &RakpInputs<'_>) -> Vec<u8> {
    hmac(
        hash,
        kg,
        &[
            &i.console_random,
            &i.bmc_random,
            &[i.role, username_len(i.username)],
            i.username,
        ],
    )
}

/// RAKP 4 integrity check value, which the BMC sends: HMAC_SIK(Rc, SIDm, GUIDm), truncated.
pub fn rakp4_icv(suite: &CipherSuite, sik: &[u8], i: &RakpInputs<'_>) -> Vec<u8> {
    let mut code = hmac(
        suite.hash,
        sik,
        &[
            &i.console_random,
            &i.bmc_session_id.to_le_bytes(),
            &i.bmc_guid,
        ],
    );
    code.truncate(suite.icv_len());
    code
}

/// Additional key `n` (K1 for integrity, K2 for confidentiality): HMAC_SIK of the constant made
/// of the byte `n` repeated 20 times (section 13.32).
///
/// Twenty bytes for the SHA-256 suites too: the specification sizes the constants for SHA-1
/// and says nothing else for the suites added later, and ipmitool, FreeIPMI and OpenBMC's
/// netipmid all keep them at 20 bytes. A client that lengthened them to the hash's 32 bytes
/// would fail every suite 17 session with those BMCs at the first integrity check.
pub fn additional_key(hash: Hash, sik: &[u8], n: u8) -> Vec<u8> {
    hmac(hash, sik, &[&[n; KEY_CONSTANT_LEN]])
}

/// Length of the constants K1 and K2 are derived from, for every suite.
const KEY_CONSTANT_LEN: usize = 20;

/// The auth code of a session packet: HMAC_K1 over auth type through next header, truncated
/// (HMAC-SHA1-96 or HMAC-SHA256-128).
pub fn packet_auth_code(suite: &CipherSuite, k1: &[u8], covered: &[u8]) -> Vec<u8> {
    let mut code = hmac(suite.hash, k1, &[covered]);
    code.truncate(suite.icv_len());
    code
}

/// Compares auth codes in constant time, so a forger learns nothing from response timing.
pub fn codes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// AES-CBC-128 payload encryption: `iv`, then the ciphertext of the payload followed by the
/// confidentiality pad 01 02 03 .. and the pad length, to a whole number of blocks.
pub fn encrypt_payload(key: &[u8; 16], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let pad = (AES_BLOCK - (plaintext.len() + 1) % AES_BLOCK) % AES_BLOCK;
    let mut buf = Vec::with_capacity(AES_BLOCK + plaintext.len() + pad + 1);
    buf.extend_from_slice(plaintext);
    // `pad` is below the block size, so every value here fits a byte.
    buf.extend((1..=pad).filter_map(|p| u8::try_from(p).ok()));
    buf.push(u8::try_from(pad).unwrap_or(0));
    let len = buf.len();
    let enc = cbc::Encryptor::<aes::Aes128>::new(key.into(), iv.into());
    // The buffer length is a multiple of the block size by construction, so this cannot fail.
    let _ = enc.encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf, len);
    let mut out = Vec::with_capacity(AES_BLOCK + len);
    out.extend_from_slice(iv);
    out.extend_from_slice(&buf);
    out
}

/// Decrypts an AES-CBC-128 payload (IV first) and strips the confidentiality pad.
pub fn decrypt_payload(key: &[u8; 16], payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if payload.len() < 2 * AES_BLOCK || !payload.len().is_multiple_of(AES_BLOCK) {
        return Err(DecodeError::CipherLength(payload.len()));
    }
    let (iv, ct) = payload.split_at(AES_BLOCK);
    let mut buf = ct.to_vec();
    let iv: &[u8; 16] = iv
        .try_into()
        .map_err(|_| DecodeError::CipherLength(payload.len()))?;
    let dec = cbc::Decryptor::<aes::Aes128>::new(key.into(), iv.into());
    dec.decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf)
        .map_err(|_| DecodeError::CipherLength(payload.len()))?;
    let pad = usize::from(*buf.last().ok_or(DecodeError::Padding)?);
    if pad >= AES_BLOCK || pad + 1 > buf.len() {
        return Err(DecodeError::Padding);
    }
    let body_len = buf.len() - pad - 1;
    let pad_ok = buf[body_len..buf.len() - 1]
        .iter()
        .zip(1u8..)
        .all(|(&b, want)| b == want);
    if !pad_ok {
        return Err(DecodeError::Padding);
    }
    buf.truncate(body_len);
    Ok(buf)
}

/// HMAC of the concatenation of `parts`.
fn hmac(hash: Hash, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match hash {
        Hash::Sha1 => {
            // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
            let mut mac =
                <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
            parts.iter().for_each(|p| mac.update(p));
            mac.finalize().into_bytes().to_vec()
        }
        Hash::Sha256 => {
            // As above: any key length is valid for HMAC.
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                .expect("HMAC accepts keys of any length");
            parts.iter().for_each(|p| mac.update(p));
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// ULENGTHm: the caller validated usernames to at most 16 bytes before any RAKP.
fn username_len(username: &[u8]) -> u8 {
    u8::try_from(username.len()).unwrap_or(u8::MAX)
}

/// Authentication algorithm RAKP-HMAC-SHA1.
const AUTH_RAKP_HMAC_SHA1: u8 = 0x01;
/// Authentication algorithm RAKP-HMAC-SHA256.
const AUTH_RAKP_HMAC_SHA256: u8 = 0x03;
/// No integrity algorithm.
const INTEGRITY_NONE: u8 = 0x00;
/// Integrity algorithm HMAC-SHA1-96.
const INTEGRITY_HMAC_SHA1_96: u8 = 0x01;
/// Integrity algorithm HMAC-SHA256-128.
const INTEGRITY_HMAC_SHA256_128: u8 = 0x04;
/// No confidentiality algorithm.
const CONF_NONE: u8 = 0x00;
/// Confidentiality algorithm AES-CBC-128.
const CONF_AES_CBC_128: u8 = 0x01;
/// AES block size in bytes.
const AES_BLOCK: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_round_trip_every_length() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len).map(|i: u8| i.wrapping_mul(31)).collect();
            let ct = encrypt_payload(&key, &iv, &plain);
            assert_eq!(ct.len() % 16, 0);
            assert_eq!(decrypt_payload(&key, &ct).unwrap(), plain);
        }
    }

    #[test]
    fn suites() {
        assert!(CipherSuite::from_id(0).is_none());
        let s17 = CipherSuite::from_id(17).unwrap();
        assert_eq!(
            s17.algorithms(),
            Algorithms {
                auth: 3,
                integrity: 4,
                confidentiality: 1
            }
        );
        assert_eq!(
            CipherSuite::from_id(3).unwrap().algorithms(),
            Algorithms {
                auth: 1,
                integrity: 1,
                confidentiality: 1
            }
        );
    }
}
