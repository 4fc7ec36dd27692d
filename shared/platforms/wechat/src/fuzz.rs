//! Fuzz tests of WeChat's inbound parser (`docs/security.md`): the EncodingAESKey, safe mode's
//! AES framing (round trips, and hand-made plaintexts with wrong lengths, padding and AppIDs),
//! the query signatures and `msg_signature` of `open`, the `echostr` handshake, and split and
//! normalisation of arbitrary and near-valid XML.

use std::collections::HashMap;

use aes::Aes256;
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD,
};
use cbc::cipher::array::Array;
use cbc::cipher::consts::U16;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use patchbay_platform::{InboundAdapter, conformance};
use patchbay_testkit::fuzz::{self, proptest::prelude::*};

use crate::crypto::{self, AesKey, CryptoError};
use crate::fixtures::*;
use crate::{Wechat, WechatCredentials};

const CHANNEL: &str = "ch_01HZX0000000000000000000WC";

/// The fields of WeChat's message XML.
const FIELDS: &[&str] = &[
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Content",
    "MsgId",
    "MsgID",
    "bizmsgmenuid",
    "PicUrl",
    "MediaId",
    "Format",
    "Recognition",
    "ThumbMediaId",
    "Location_X",
    "Location_Y",
    "Scale",
    "Label",
    "Title",
    "Description",
    "Url",
    "Event",
    "EventKey",
    "Ticket",
    "Status",
    "Encrypt",
    "patchbay_locale",
];

/// Values WeChat's fields take, and a few it never sends.
fn field_value() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(
            &[
                "text",
                "image",
                "voice",
                "video",
                "shortvideo",
                "location",
                "link",
                "event",
                "subscribe",
                "SCAN",
                "unsubscribe",
                "CLICK",
                "VIEW",
                "TEMPLATESENDJOBFINISH",
                "success",
                "failed:user block",
                "qrscene_7",
                "1767225600",
                "1234567890123456",
                "23.134521",
                "113.358803",
                "oUser123",
            ][..]
        )
        .prop_map(str::to_owned),
        fuzz::tricky_string(),
    ]
    .boxed()
}

/// A `<xml>` document of `fields`, each as CDATA or escaped text.
fn xml_of(fields: &[(String, String, bool)]) -> String {
    let mut out = String::from("<xml>");
    for (name, value, cdata) in fields {
        let value = if *cdata {
            format!("<![CDATA[{}]]>", value.replace("]]>", "]]]]><![CDATA[>"))
        } else {
            value.replace('&', "&amp;").replace('<', "&lt;")
        };
        out.push_str(&format!("<{name}>{value}</{name}>"));
    }
    out.push_str("</xml>");
    out
}

/// The fields each kind of message or event has.
const KINDS: &[(&str, &[&str])] = &[
    ("text", &["Content", "MsgId", "bizmsgmenuid"]),
    ("image", &["PicUrl", "MediaId", "MsgId"]),
    ("voice", &["MediaId", "Format", "Recognition", "MsgId"]),
    ("video", &["MediaId", "ThumbMediaId", "MsgId"]),
    ("shortvideo", &["MediaId", "ThumbMediaId", "MsgId"]),
    (
        "location",
        &["Location_X", "Location_Y", "Scale", "Label", "MsgId"],
    ),
    ("link", &["Title", "Description", "Url", "MsgId"]),
    ("event", &["Event", "EventKey", "Ticket", "Status", "MsgID"]),
];

/// Numbers as WeChat writes them, and the odd ones Rust's `parse` takes.
fn number() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        (-180.0..180.0f64).prop_map(|n| format!("{n:.6}")),
        fuzz::tricky_string(),
    ]
    .boxed()
}

/// Well-formed message XML of one kind: its own fields, each present or not, with values
/// WeChat sends or odd ones, plus a few fields of any kind, as CDATA or text.
fn structured_xml() -> BoxedStrategy<String> {
    let value = |name: &str| -> BoxedStrategy<String> {
        match name {
            "CreateTime" | "MsgId" | "MsgID" | "Location_X" | "Location_Y" | "Scale" => number(),
            _ => field_value(),
        }
    };
    let kind = prop::sample::select(KINDS);
    kind.prop_flat_map(move |(kind, own)| {
        let mut names = vec!["FromUserName", "CreateTime", "ToUserName"];
        names.extend_from_slice(own);
        let fields: Vec<_> = names
            .into_iter()
            .map(|name| {
                let v = match name {
                    "FromUserName" => {
                        prop_oneof![4 => Just(OPENID.to_owned()), 1 => field_value()].boxed()
                    }
                    "CreateTime" => prop_oneof![4 => Just(TIME.to_string()), 1 => number()].boxed(),
                    _ => value(name),
                };
                (
                    Just(name.to_owned()),
                    v,
                    any::<bool>(),
                    prop::bool::weighted(0.85),
                )
            })
            .collect();
        let extra = prop::collection::vec(
            (
                prop::sample::select(FIELDS).prop_map(str::to_owned),
                field_value(),
                any::<bool>(),
            ),
            0..3,
        );
        (Just(kind), fields, extra)
    })
    .prop_map(|(kind, fields, extra)| {
        let mut all = vec![("MsgType".to_owned(), kind.to_owned(), true)];
        all.extend(
            fields
                .into_iter()
                .filter(|f| f.3)
                .map(|(n, v, c, _)| (n, v, c)),
        );
        all.extend(extra);
        xml_of(&all)
    })
    .boxed()
}

fn seeds() -> Vec<Vec<u8>> {
    [
        text(OPENID, 1, "hi"),
        menu_tap(OPENID, 2, "Yes", "101"),
        image(OPENID, 3, "https://x.example/p.jpg", "media-1"),
        voice(OPENID, 4, "media-2", Some("hello")),
        video(OPENID, 5, "shortvideo", "media-3"),
        location(OPENID, 6, 23.134521, 113.358803, "Guangzhou"),
        link(OPENID, 7, "T", "D", "https://x.example"),
        event(OPENID, TIME, "subscribe", Some("qrscene_7")),
        event(OPENID, TIME, "CLICK", Some("MENU_1")),
        template_finished(OPENID, TIME, 8, "failed:user block"),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

fn creds() -> WechatCredentials {
    WechatCredentials {
        app_id: APP_ID.into(),
        app_secret: "secret".into(),
        token: TOKEN.into(),
        encoding_aes_key: Some(AES_KEY.into()),
        customer_service_api: true,
    }
}

fn key() -> AesKey {
    AesKey::from_encoding_aes_key(AES_KEY).expect("the fixtures' key")
}

/// AES-256-CBC of whole blocks with WeChat's IV (the key's first 16 bytes), no padding of
/// its own: to encrypt plaintexts that `crypto::encrypt` would never frame.
fn cbc_encrypt(key: &[u8; 32], mut buf: Vec<u8>) -> String {
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&key[..16]);
    let mut enc = cbc::Encryptor::<Aes256>::new(&(*key).into(), &iv.into());
    let (blocks, _tail) = Array::<u8, U16>::slice_as_chunks_mut(&mut buf);
    enc.encrypt_blocks(blocks);
    STANDARD.encode(&buf)
}

/// The bytes of the fixtures' EncodingAESKey (whose last character has trailing bits set).
fn raw_key() -> [u8; 32] {
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(format!("{AES_KEY}="))
        .ok()
        .and_then(|k| k.try_into().ok())
        .expect("the fixtures' key")
}

fn check(body: &[u8]) -> Result<(), TestCaseError> {
    conformance::pipeline::<Wechat>(CHANNEL, body).map_err(TestCaseError::fail)?;
    Ok(())
}

fn query(pairs: Vec<(String, String)>) -> HashMap<String, String> {
    pairs.into_iter().collect()
}

proptest! {
    #![proptest_config(fuzz::config())]

    /// Encrypt then decrypt returns the XML, for any key, AppID and message; another AppID
    /// is refused by name.
    #[test]
    fn fuzz_wechat_aes_round_trip(
        raw_key in any::<[u8; 32]>(),
        app_id in any::<String>(),
        other in any::<String>(),
        random in any::<[u8; 16]>(),
        xml in any::<String>(),
    ) {
        let key = AesKey::from_encoding_aes_key(&STANDARD_NO_PAD.encode(raw_key))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let encrypted = crypto::encrypt(&key, &app_id, random, &xml);
        prop_assert_eq!(crypto::decrypt(&key, &app_id, &encrypted), Ok(xml.clone()));
        if other != app_id {
            let refused = crypto::decrypt(&key, &other, &encrypted);
            let is_mismatch = matches!(refused, Err(CryptoError::AppIdMismatch { .. }));
            // Unless `other` is a suffix of XML ‖ AppID that the length field happens to fit.
            prop_assert!(is_mismatch, "decrypted for another AppID: {:?}", refused);
        }
    }

    /// Plaintexts framed by hand, with a length field off by a little or a lot, any AppID,
    /// valid or broken 32-byte PKCS#7 padding and any alignment: only a correct frame
    /// decrypts, to its XML; every other one is a clear error.
    #[test]
    fn fuzz_wechat_aes_framing(
        random in any::<[u8; 16]>(),
        xml in prop_oneof![any::<String>(), "<xml>[a-z]{0,40}</xml>"],
        len_delta in prop_oneof![4 => Just(0i64), 2 => -40i64..40, 1 => any::<u32>().prop_map(i64::from)],
        app_id in prop_oneof![Just(APP_ID.to_owned()), fuzz::tricky_string()],
        pad in prop_oneof![Just(None), (any::<u8>(), 0usize..48).prop_map(Some)],
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let len = u32::try_from((xml.len() as i64 + len_delta).max(0)).unwrap_or(u32::MAX);
        let mut plain = random.to_vec();
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(xml.as_bytes());
        plain.extend_from_slice(app_id.as_bytes());
        let valid_pad = crypto::PAD_BLOCK - plain.len() % crypto::PAD_BLOCK;
        match pad {
            None => plain.resize(plain.len() + valid_pad, u8::try_from(valid_pad).unwrap_or(0)),
            Some((byte, count)) => {
                plain.resize(plain.len() + count, byte);
                // Whole AES blocks, whatever the padding left.
                let short = (16 - plain.len() % 16) % 16;
                plain.extend((0..short).map(|i| tail.get(i).copied().unwrap_or(0)));
            }
        }
        let raw_key = raw_key();
        let encrypted = cbc_encrypt(&raw_key, plain);
        let well_framed = pad.is_none() && len_delta == 0 && app_id == APP_ID;
        match crypto::decrypt(&key(), APP_ID, &encrypted) {
            Ok(found) if well_framed => prop_assert_eq!(found, xml),
            Ok(found) => prop_assert!(
                xml.starts_with(&found) || pad.is_some(),
                "a frame off by {} decrypted to {:?}", len_delta, found
            ),
            Err(e) => {
                prop_assert!(!well_framed, "a correct frame refused: {}", e);
                fuzz::clear(&e.to_string())?;
            }
        }
    }

    /// Any `Encrypt` text and any EncodingAESKey: a clear error, never a panic.
    #[test]
    fn fuzz_wechat_aes_arbitrary(
        text in prop_oneof![any::<String>(), prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| STANDARD.encode(b))],
        encoding_key in prop_oneof![any::<String>(), "[A-Za-z0-9+/]{43}", "[A-Za-z0-9+/=]{40,46}"],
    ) {
        if let Err(e) = crypto::decrypt(&key(), APP_ID, &text) {
            fuzz::clear(&e.to_string())?;
        }
        if let Err(e) = AesKey::from_encoding_aes_key(&encoding_key) {
            fuzz::clear(&e.to_string())?;
        }
    }

    /// Safe mode end to end: a webhook signed and encrypted like WeChat's opens to its XML
    /// and goes through split and normalisation; one bit off in `signature` or
    /// `msg_signature` is refused.
    #[test]
    fn fuzz_wechat_open_encrypted(
        xml in prop_oneof![structured_xml(), fuzz::near_valid_bytes(seeds()).prop_map(|b| String::from_utf8_lossy(&b).into_owned())],
        timestamp in "[0-9]{1,12}",
        nonce in "[A-Za-z0-9]{0,16}",
        compatible in any::<bool>(),
        which in prop::sample::select(&["signature", "msg_signature"][..]),
        bit in any::<usize>(),
    ) {
        let (body, pairs) = encrypted(&xml, TOKEN, APP_ID, AES_KEY, &timestamp, &nonce, compatible);
        let good = query(pairs);
        match Wechat::open(&creds(), &HeaderMap::new(), &good, body.as_bytes()) {
            Ok(opened) => {
                prop_assert_eq!(opened.as_ref(), xml.as_bytes());
                check(&opened)?;
            }
            // XML with `]]>` cannot ride in the compatible mode's plaintext copy.
            Err(r) => { conformance::rejection(&r).map_err(TestCaseError::fail)?; prop_assert!(compatible); }
        }
        let mut bad = good.clone();
        let sig = fuzz::unhex(&good[which]).unwrap_or_default();
        bad.insert(which.to_owned(), fuzz::hex(&fuzz::flip(&sig, bit)));
        match Wechat::open(&creds(), &HeaderMap::new(), &bad, body.as_bytes()) {
            Ok(_) => prop_assert!(false, "{} one bit off accepted", which),
            Err(r) => { conformance::rejection(&r).map_err(TestCaseError::fail)?; }
        }
    }

    /// Any query and body at a channel's URL: a clear rejection or what split takes.
    #[test]
    fn fuzz_wechat_open_arbitrary(
        pairs in prop::collection::vec((
            prop::sample::select(&["signature", "timestamp", "nonce", "encrypt_type", "msg_signature", "echostr", "openid"][..]),
            prop_oneof![Just("aes".to_owned()), fuzz::tricky_string()]), 0..7),
        body in prop_oneof![fuzz::bytes(300), fuzz::near_valid_bytes(seeds())],
    ) {
        let q: HashMap<String, String> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        match Wechat::open(&creds(), &HeaderMap::new(), &q, &body) {
            Ok(opened) => check(&opened)?,
            Err(r) => { conformance::rejection(&r).map_err(TestCaseError::fail)?; }
        }
        match Wechat::challenge(&creds(), &q) {
            Some(Ok(echo)) => prop_assert_eq!(Some(&echo), q.get("echostr")),
            Some(Err(r)) => { conformance::rejection(&r).map_err(TestCaseError::fail)?; }
            None => prop_assert!(false, "WeChat has a handshake"),
        }
    }

    #[test]
    fn fuzz_wechat_split_normalise_bytes(body in fuzz::bytes(512)) {
        check(&body)?;
    }

    #[test]
    fn fuzz_wechat_split_normalise_near_valid(body in fuzz::near_valid_bytes(seeds())) {
        check(&body)?;
    }

    #[test]
    fn fuzz_wechat_split_normalise_structured(xml in structured_xml()) {
        check(xml.as_bytes())?;
    }
}

/// Found by `fuzz_wechat_split_normalise_structured`: Rust parses `NaN`, `inf` and `1e999` as
/// floats, and a non-finite coordinate became `null` in the event's JSON, which the router
/// could not decode.
#[test]
fn a_location_that_is_not_finite_is_refused() {
    for odd in ["NaN", "inf", "-infinity", "1e999"] {
        let xml = location(OPENID, 6, 23.5, 113.5, "G").replace("23.5", odd);
        let splits = Wechat::split(CHANNEL, xml.as_bytes()).expect("split");
        let env = conformance::envelope::<Wechat>(CHANNEL, splits[0].clone()).expect("envelope");
        let refused = Wechat::normalise(&env).expect_err(odd);
        assert_eq!(refused.0, "Location_X is not a number", "{odd}");
    }
}

/// The near-valid inputs start from payloads the parser takes: most seeds become events
/// (a few, such as receipts of unknown messages or typing, are valid and make none).
#[test]
fn the_seeds_are_taken() {
    conformance::assert_seeds_taken::<Wechat>(CHANNEL, &seeds());
}
