//! External vectors: Fernet spec (generate, verify, invalid), Wycheproof A128/A192/A256CBC-HS*,
//! AES-CBC-PKCS5 and HMAC-SHA256, and RFC 7518 Appendix B. 100% must pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_token::hazmat::{
    aes_cbc_pkcs7_decrypt, aes_cbc_pkcs7_encrypt, cbc_hmac_seal_with_iv, fernet_encrypt_with_iv,
    hmac_sha256_verify,
};
use credvault_token::{Algorithm, CbcHmacKey, Fernet};
use serde_json::Value;

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn load(path: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap(),
    )
    .unwrap()
}

/// Seconds since the epoch for `YYYY-MM-DDTHH:MM:SS±HH:MM` (the spec's `now` fields).
fn unix(ts: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d, hh, mm, ss) = (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19));
    let sign = if &ts[19..20] == "-" { -1 } else { 1 };
    let off = sign * (n(20..22) * 3600 + n(23..25) * 60);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3600 + mm * 60 + ss - off) as u64
}

#[test]
fn unix_time_parser_is_right() {
    assert_eq!(unix("1970-01-01T00:00:00+00:00"), 0);
    assert_eq!(unix("2000-03-01T00:00:00+00:00"), 951_868_800);
    assert_eq!(unix("1985-10-26T01:20:00-07:00"), 499_162_800);
}

#[test]
fn fernet_spec_generate() {
    let cases = load("fernet-spec/generate.json");
    assert_eq!(cases.as_array().unwrap().len(), 1);
    for c in cases.as_array().unwrap() {
        let key = Fernet::new(c["secret"].as_str().unwrap()).unwrap();
        let iv: Vec<u8> = c["iv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        let token = fernet_encrypt_with_iv(
            &key,
            c["src"].as_str().unwrap().as_bytes(),
            unix(c["now"].as_str().unwrap()),
            &iv.try_into().unwrap(),
        );
        assert_eq!(token, c["token"].as_str().unwrap());
    }
}

#[test]
fn fernet_spec_verify() {
    let cases = load("fernet-spec/verify.json");
    assert_eq!(cases.as_array().unwrap().len(), 1);
    for c in cases.as_array().unwrap() {
        let key = Fernet::new(c["secret"].as_str().unwrap()).unwrap();
        let pt = key
            .decrypt_at(
                c["token"].as_str().unwrap(),
                Some(c["ttl_sec"].as_u64().unwrap()),
                unix(c["now"].as_str().unwrap()),
            )
            .unwrap();
        assert_eq!(pt.expose_secret(), c["src"].as_str().unwrap().as_bytes());
    }
}

#[test]
fn fernet_spec_invalid() {
    let cases = load("fernet-spec/invalid.json");
    assert_eq!(cases.as_array().unwrap().len(), 8);
    for c in cases.as_array().unwrap() {
        let key = Fernet::new(c["secret"].as_str().unwrap()).unwrap();
        let r = key.decrypt_at(
            c["token"].as_str().unwrap(),
            Some(c["ttl_sec"].as_u64().unwrap()),
            unix(c["now"].as_str().unwrap()),
        );
        assert!(r.is_err(), "{} must be rejected", c["desc"]);
    }
}

fn wycheproof_cbc_hmac(file: &str, alg: Algorithm) -> (usize, usize) {
    let v = load(&format!("wycheproof/{file}"));
    let (mut valid, mut invalid) = (0, 0);
    for g in v["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let id = &t["tcId"];
            let (key, iv, aad, msg, ct, tag) = (
                h(&t["key"]),
                h(&t["iv"]),
                h(&t["aad"]),
                h(&t["msg"]),
                h(&t["ct"]),
                h(&t["tag"]),
            );
            let k = CbcHmacKey::new(alg, &key).unwrap();
            let mut sealed = iv.clone();
            sealed.extend_from_slice(&ct);
            sealed.extend_from_slice(&tag);
            match t["result"].as_str().unwrap() {
                "valid" => {
                    let (e, tg) =
                        cbc_hmac_seal_with_iv(&k, &iv.clone().try_into().unwrap(), &aad, &msg);
                    assert_eq!((e, tg), (ct, tag), "{file} tc {id} seal");
                    assert_eq!(
                        k.open(&aad, &sealed).unwrap().expose_secret(),
                        &msg[..],
                        "{file} tc {id} open"
                    );
                    valid += 1;
                }
                "invalid" => {
                    // Some invalid cases have IVs of other sizes; the sealed form then simply
                    // does not authenticate.
                    assert!(k.open(&aad, &sealed).is_err(), "{file} tc {id} must fail");
                    invalid += 1;
                }
                r => panic!("{file} tc {id}: result {r}"),
            }
        }
    }
    assert_eq!(
        valid + invalid,
        v["numberOfTests"].as_u64().unwrap() as usize
    );
    (valid, invalid)
}

#[test]
fn wycheproof_a128cbc_hs256() {
    assert_eq!(
        wycheproof_cbc_hmac("a128cbc_hs256_test.json", Algorithm::A128CbcHs256),
        (67, 27)
    );
}

#[test]
fn wycheproof_a192cbc_hs384() {
    assert_eq!(
        wycheproof_cbc_hmac("a192cbc_hs384_test.json", Algorithm::A192CbcHs384),
        (67, 27)
    );
}

#[test]
fn wycheproof_a256cbc_hs512() {
    assert_eq!(
        wycheproof_cbc_hmac("a256cbc_hs512_test.json", Algorithm::A256CbcHs512),
        (67, 27)
    );
}

#[test]
fn wycheproof_aes_cbc_pkcs5() {
    let v = load("wycheproof/aes_cbc_pkcs5_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for g in v["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let (key, iv, msg, ct) = (h(&t["key"]), h(&t["iv"]), h(&t["msg"]), h(&t["ct"]));
            let iv: [u8; 16] = iv.try_into().unwrap();
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(
                        aes_cbc_pkcs7_encrypt(&key, &iv, &msg).unwrap(),
                        ct,
                        "tc {}",
                        t["tcId"]
                    );
                    assert_eq!(
                        aes_cbc_pkcs7_decrypt(&key, &iv, &ct).unwrap(),
                        msg,
                        "tc {}",
                        t["tcId"]
                    );
                    valid += 1;
                }
                _ => {
                    assert!(
                        aes_cbc_pkcs7_decrypt(&key, &iv, &ct).is_none(),
                        "tc {}",
                        t["tcId"]
                    );
                    invalid += 1;
                }
            }
        }
    }
    assert_eq!((valid, invalid), (72, 144));
}

#[test]
fn wycheproof_hmac_sha256() {
    let v = load("wycheproof/hmac_sha256_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for g in v["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let ok = hmac_sha256_verify(&h(&t["key"]), &h(&t["msg"]), &h(&t["tag"]));
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert!(ok, "tc {}", t["tcId"]);
                    valid += 1;
                }
                _ => {
                    assert!(!ok, "tc {}", t["tcId"]);
                    invalid += 1;
                }
            }
        }
    }
    assert_eq!((valid, invalid), (66, 108));
}

#[test]
fn rfc7518_appendix_b() {
    let v = load("rfc7518/rfc7518_aes_cbc_hmac.json");
    let tests = v["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 3);
    for t in tests {
        let alg = match t["jwe_enc"].as_str().unwrap() {
            "A128CBC-HS256" => Algorithm::A128CbcHs256,
            "A192CBC-HS384" => Algorithm::A192CbcHs384,
            "A256CBC-HS512" => Algorithm::A256CbcHs512,
            other => panic!("{other}"),
        };
        assert_eq!(alg.jwe_name(), t["jwe_enc"].as_str().unwrap());
        assert_eq!(alg.tag_len(), t["tag_len"].as_u64().unwrap() as usize);
        let k = h(&t["K"]);
        assert_eq!(
            [h(&t["MAC_KEY"]), h(&t["ENC_KEY"])].concat(),
            k,
            "K = MAC_KEY ‖ ENC_KEY"
        );
        let key = CbcHmacKey::new(alg, &k).unwrap();
        let (p, iv, a) = (h(&t["P"]), h(&t["IV"]), h(&t["A"]));
        assert_eq!(h(&t["AL"]), ((a.len() as u64) * 8).to_be_bytes());
        let (e, tag) = cbc_hmac_seal_with_iv(&key, &iv.clone().try_into().unwrap(), &a, &p);
        assert_eq!(e, h(&t["E"]), "{} E", t["name"]);
        assert_eq!(tag, h(&t["T"]), "{} T", t["name"]);
        assert_eq!(
            &h(&t["M"])[..tag.len()],
            &tag[..],
            "T is the leftmost half of M"
        );
        let sealed = [iv, e, tag].concat();
        assert_eq!(key.open(&a, &sealed).unwrap().expose_secret(), &p[..]);
    }
}
