//! SigV4 verification the way KMS does it: parse `Authorization`, check the credential scope,
//! the clock skew and the identity, then recompute the signature with the signer core signs
//! with (AWS's `aws-sigv4`) over exactly the headers the request says it signed, at the time
//! its `X-Amz-Date` says, and compare in constant time.
//!
//! Error types and texts are KMS's (see [`super::error`]); the skew window is AWS's 5 minutes
//! ("Signature expired: 20151120T200815Z is now earlier than 20151120T201846Z
//! (20151120T202346Z - 5 min.)", "Signature not yet current: … is still later than …
//! (… + 5 min.)").

use std::time::{Duration, SystemTime};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_sigv4::http_request::{
    PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use kmstool_core::sigv4::{ALGORITHM, AmzDate};

use super::credentials::SimCredentials;
use super::error::KmsError;
use super::http::Request;

/// The SigV4 service name of KMS.
pub const SERVICE: &str = "kms";

/// What a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Verifier<'a> {
    /// Accepted identities.
    pub credentials: &'a [SimCredentials],
    /// The emulator's region: the only one a credential scope may name.
    pub region: &'a str,
    /// The emulator's current time.
    pub now: SystemTime,
    /// Largest accepted difference between `X-Amz-Date` and `now`.
    pub max_skew: Duration,
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// Access key id.
    pub access_key_id: &'a str,
    /// Scope date, `YYYYMMDD`.
    pub date: &'a str,
    /// Scope region.
    pub region: &'a str,
    /// Scope service.
    pub service: &'a str,
    /// Scope terminator, `aws4_request`.
    pub terminator: &'a str,
    /// `SignedHeaders`, as sent.
    pub signed_headers: &'a str,
    /// `Signature`, lowercase hex.
    pub signature: &'a str,
}

/// Parses an `Authorization` value; a missing part is KMS's `IncompleteSignatureException`.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, KmsError> {
    let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if algorithm != ALGORITHM {
        return Err(KmsError::incomplete_signature(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'"
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((name, v)) = part.trim().split_once('=') else {
            continue;
        };
        match name {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (name, part) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if part.is_none() {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(KmsError::incomplete_signature(missing.trim_end()));
    };
    let mut scope = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(KmsError::incomplete_signature(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got '{credential}'"
        )));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        terminator,
        signed_headers,
        signature,
    })
}

impl<'a> Verifier<'a> {
    /// Verifies a request's signature and returns the identity that signed it.
    pub fn verify(&self, request: &Request) -> Result<&'a SimCredentials, KmsError> {
        let credentials: &'a [SimCredentials] = self.credentials;
        let Some(header) = request.header("authorization") else {
            return Err(KmsError::missing_authentication());
        };
        let auth = parse_authorization(header)?;
        let amz_date = request.header("x-amz-date").ok_or_else(|| {
            KmsError::incomplete_signature(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header.",
            )
        })?;
        let signed: Vec<&str> = auth.signed_headers.split(';').collect();
        if !signed.contains(&"host") {
            return Err(KmsError::incomplete_signature(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        if !signed.contains(&"x-amz-date") {
            return Err(KmsError::incomplete_signature(
                "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        let signed_at = AmzDate::parse(amz_date).ok_or_else(|| {
            KmsError::incomplete_signature(format!(
                "Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See \
                 http://en.wikipedia.org/wiki/ISO_8601"
            ))
        })?;
        self.check_scope(&auth, amz_date)?;
        let identity = credentials
            .iter()
            .find(|c| c.credentials.access_key_id == auth.access_key_id)
            .ok_or_else(KmsError::unrecognized_client)?;
        check_token(identity, request)?;
        self.check_skew(signed_at)?;
        if identity.expiration.is_some_and(|e| e <= self.now) {
            return Err(KmsError::expired_token());
        }
        check_signature(identity, request, &auth, signed_at)?;
        Ok(identity)
    }

    fn check_scope(&self, auth: &Authorization<'_>, amz_date: &str) -> Result<(), KmsError> {
        let date_of_request = amz_date.get(..8).unwrap_or(amz_date);
        if auth.date != date_of_request {
            return Err(KmsError::invalid_signature(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{date_of_request}', from '{amz_date}'.",
                auth.date
            )));
        }
        if auth.region != self.region {
            return Err(KmsError::invalid_signature(format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                auth.region
            )));
        }
        if auth.service != SERVICE {
            return Err(KmsError::invalid_signature(format!(
                "Credential should be scoped to correct service: '{SERVICE}'. "
            )));
        }
        if auth.terminator != "aws4_request" {
            return Err(KmsError::invalid_signature(format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'. ",
                auth.terminator
            )));
        }
        Ok(())
    }

    fn check_skew(&self, signed_at: SystemTime) -> Result<(), KmsError> {
        let minutes = self.max_skew.as_secs() / 60;
        let fmt = |t: SystemTime| AmzDate::from_system_time(t).date_time;
        let now = self.now;
        if signed_at + self.max_skew < now {
            let earliest = now.checked_sub(self.max_skew).unwrap_or(now);
            return Err(KmsError::invalid_signature(format!(
                "Signature expired: {} is now earlier than {} ({} - {minutes} min.)",
                fmt(signed_at),
                fmt(earliest),
                fmt(now)
            )));
        }
        if signed_at > now + self.max_skew {
            return Err(KmsError::invalid_signature(format!(
                "Signature not yet current: {} is still later than {} ({} + {minutes} min.)",
                fmt(signed_at),
                fmt(now + self.max_skew),
                fmt(now)
            )));
        }
        Ok(())
    }
}

/// The session token must be exactly the identity's: present with temporary credentials,
/// absent with long-term ones.
fn check_token(identity: &SimCredentials, request: &Request) -> Result<(), KmsError> {
    let sent = request.header("x-amz-security-token");
    let expected = identity
        .credentials
        .session_token
        .as_ref()
        .map(|t| t.expose());
    let matches = match (sent, expected) {
        (None, None) => true,
        (Some(sent), Some(expected)) => {
            verify_slices_are_equal(sent.as_bytes(), expected.as_bytes()).is_ok()
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(KmsError::unrecognized_client())
    }
}

fn check_signature(
    identity: &SimCredentials,
    request: &Request,
    auth: &Authorization<'_>,
    signed_at: SystemTime,
) -> Result<(), KmsError> {
    let mismatch = || {
        KmsError::invalid_signature(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        )
    };
    // The headers the request lists, as sent. The signer adds `x-amz-date` (from the time) and
    // `x-amz-security-token` (from the identity, which `check_token` matched) itself, so those
    // two are checked to be there once and not handed over.
    let mut headers: Vec<(&str, &str)> = Vec::new();
    let mut token_signed = false;
    for name in auth.signed_headers.split(';') {
        let mut sent = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .peekable();
        if sent.peek().is_none() {
            return Err(mismatch());
        }
        match name {
            "x-amz-date" | "x-amz-security-token" => {
                if sent.count() != 1 {
                    return Err(mismatch());
                }
                token_signed |= name == "x-amz-security-token";
            }
            _ => headers.extend(sent),
        }
    }
    // The path and query as sent (the emulator serves `/`): no re-encoding, no normalisation.
    // The URI's authority is a placeholder: the signed `Host` header is what is signed.
    let uri = format!("https://kms.invalid{}", request.target);
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.session_token_mode = if token_signed {
        SessionTokenMode::Include
    } else {
        SessionTokenMode::Exclude
    };
    let signer: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(
            identity.credentials.access_key_id.as_str(),
            identity.credentials.secret_access_key.expose(),
            identity
                .credentials
                .session_token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            None,
            "kms-emulator",
        )
        .into();
    let Ok(params) = v4::SigningParams::builder()
        .identity(&signer)
        .region(auth.region)
        .name(auth.service)
        .time(signed_at)
        .settings(settings)
        .build()
    else {
        return Err(mismatch());
    };
    let params = params.into();
    // A request aws-sigv4 cannot canonicalise (a header value or target it refuses) cannot
    // carry a valid signature.
    let Ok(signable) = SignableRequest::new(
        &request.method,
        uri,
        headers.into_iter(),
        SignableBody::Bytes(&request.body),
    ) else {
        return Err(mismatch());
    };
    let Ok(output) = aws_sigv4::http_request::sign(signable, &params) else {
        return Err(mismatch());
    };
    let (instructions, expected) = output.into_parts();
    let recomputed = instructions
        .headers()
        .find(|(name, _)| *name == "authorization")
        .and_then(|(_, value)| {
            parse_authorization(value)
                .ok()
                .map(|a| a.signed_headers.to_owned())
        });
    if recomputed.as_deref() != Some(auth.signed_headers) {
        return Err(mismatch());
    }
    verify_slices_are_equal(expected.as_bytes(), auth.signature.as_bytes()).map_err(|_| mismatch())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmstool_core::secret::{Credentials, SecretString};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn authorization_parser_never_panics(value in "\\PC{0,200}") {
            let _ = parse_authorization(&value);
        }

        #[test]
        fn authorization_round_trips(
            key in "[A-Z0-9]{4,20}",
            region in "[a-z]{2}-[a-z]{4,9}-[1-9]",
            signature in "[0-9a-f]{64}",
        ) {
            let header = format!(
                "AWS4-HMAC-SHA256 Credential={key}/20261129/{region}/kms/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature={signature}"
            );
            let parsed = parse_authorization(&header).expect("well-formed");
            prop_assert_eq!(parsed.access_key_id, key.as_str());
            prop_assert_eq!(parsed.region, region.as_str());
            prop_assert_eq!(parsed.signature, signature.as_str());
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn time(text: &str) -> SystemTime {
        AmzDate::parse(text).expect("an X-Amz-Date")
    }

    fn request(bytes: &[u8]) -> Request {
        let (request, _) = super::super::http::parse_request(bytes, 1 << 20)
            .expect("parses")
            .expect("complete");
        request
    }

    fn verify(
        identity: &SimCredentials,
        region: &str,
        request: &Request,
    ) -> Result<String, KmsError> {
        let now = time(request.header("x-amz-date").expect("X-Amz-Date"));
        let credentials = std::slice::from_ref(identity);
        let verifier = Verifier {
            credentials,
            region,
            now: now + Duration::from_secs(60),
            max_skew: Duration::from_secs(300),
        };
        verifier
            .verify(request)
            .map(|c| c.credentials.access_key_id.clone())
    }

    /// Requests signed by an independent signer (fixtures/sigv4/) verify, and stop verifying
    /// when a byte of the body changes.
    #[test]
    fn verifies_requests_signed_by_an_independent_signer() {
        let text = fixture("sigv4/kms-sigv4-vectors.json");
        let vectors: Vec<serde_json::Value> = serde_json::from_slice(&text).expect("JSON");
        assert!(vectors.len() >= 4);
        for v in vectors {
            let field = |name: &str| v[name].as_str().expect(name).to_owned();
            let expected = &v["expected"];
            let token = v["session_token"].as_str();
            let identity = SimCredentials::new(
                Credentials::new(
                    field("access_key_id"),
                    field("secret_access_key").as_str(),
                    token.map(SecretString::from),
                ),
                "111122223333",
            );
            let body = field("body");
            let mut head = format!(
                "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 X-Amz-Target: {}\r\nX-Amz-Date: {}\r\n",
                field("host"),
                field("x_amz_target"),
                expected["X-Amz-Date"].as_str().expect("date"),
            );
            if let Some(token) = token {
                head.push_str(&format!("X-Amz-Security-Token: {token}\r\n"));
            }
            head.push_str(&format!(
                "Authorization: {}\r\nContent-Length: {}\r\n\r\n",
                expected["Authorization"].as_str().expect("authorization"),
                body.len()
            ));
            let mut bytes = [head.as_bytes(), body.as_bytes()].concat();
            let region = field("region");
            assert_eq!(
                verify(&identity, &region, &request(&bytes)).map_err(|e| e.message),
                Ok(field("access_key_id")),
                "{}",
                field("name")
            );
            let last = bytes.len() - 2;
            bytes[last] ^= 1;
            let error = verify(&identity, &region, &request(&bytes)).expect_err("tampered");
            assert_eq!(error.error_type, "InvalidSignatureException");
        }
    }

    /// What the C KMS Tool sends (fixtures/upstream-wire/) verifies: it also signs
    /// `content-length` and `x-amz-content-sha256`, and names headers in mixed case. Its
    /// captures were signed with the secret access key `SECRET` (and the token `TOKEN`).
    #[test]
    fn verifies_the_c_tools_requests() {
        for name in [
            "decrypt-request-with-session-token-and-ec.http",
            "generatedatakey-request-cli.http",
            "generaterandom-request-cli.http",
        ] {
            let bytes = fixture(&format!("upstream-wire/{name}"));
            let request = request(&bytes);
            let auth = parse_authorization(request.header("authorization").expect("signed"))
                .expect("parses");
            let token = request
                .header("x-amz-security-token")
                .map(SecretString::from);
            let identity = SimCredentials::new(
                Credentials::new(auth.access_key_id, "SECRET", token),
                "111122223333",
            );
            assert_eq!(
                verify(&identity, auth.region, &request).map_err(|e| e.message),
                Ok(auth.access_key_id.to_owned()),
                "{name}"
            );
        }
    }

    /// Some signers send the session token without signing it; KMS accepts that, and so does
    /// the emulator (the token is still checked against the identity's).
    #[test]
    fn verifies_a_token_sent_but_not_signed() {
        let identity = SimCredentials::new(
            Credentials::new("ASIAEXAMPLE", "t3mp", Some(SecretString::from("tok"))),
            "111122223333",
        );
        let at = time("20261129T120000Z");
        let host = "kms.us-east-1.amazonaws.com";
        let body = br#"{"NumberOfBytes":4}"#;
        let signer: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new(
                "ASIAEXAMPLE",
                "t3mp",
                Some("tok".into()),
                None,
                "test",
            )
            .into();
        let mut settings = SigningSettings::default();
        settings.session_token_mode = SessionTokenMode::Exclude;
        let params = v4::SigningParams::builder()
            .identity(&signer)
            .region("us-east-1")
            .name("kms")
            .time(at)
            .settings(settings)
            .build()
            .expect("params")
            .into();
        let headers = [
            ("host", host),
            ("x-amz-target", "TrentService.GenerateRandom"),
        ];
        let signable = SignableRequest::new(
            "POST",
            format!("https://{host}/"),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .expect("signable");
        let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
            .expect("signs")
            .into_parts();
        let mut head = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nX-Amz-Target: TrentService.GenerateRandom\r\n"
        );
        for (name, value) in instructions.headers() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        assert!(head.contains("x-amz-security-token: tok\r\n"), "{head}");
        assert!(
            head.contains("SignedHeaders=host;x-amz-date;x-amz-target,"),
            "{head}"
        );
        let request = request(&[head.as_bytes(), body].concat());
        assert_eq!(
            verify(&identity, "us-east-1", &request).map_err(|e| e.message),
            Ok("ASIAEXAMPLE".to_owned())
        );
    }

    #[test]
    fn parses_authorization() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20261129/us-east-1/kms/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=abcd",
        )
        .expect("should succeed");
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.date, "20261129");
        assert_eq!(a.region, "us-east-1");
        assert_eq!(a.service, "kms");
        assert_eq!(a.signed_headers, "host;x-amz-date");
        assert_eq!(a.signature, "abcd");
    }

    #[test]
    fn names_missing_parts() {
        let e =
            parse_authorization("AWS4-HMAC-SHA256 Credential=A/B/C/D/E").expect_err("should fail");
        assert_eq!(e.error_type, "IncompleteSignatureException");
        assert_eq!(
            e.message.as_deref(),
            Some(
                "Authorization header requires 'Signature' parameter. Authorization header \
                 requires 'SignedHeaders' parameter."
            )
        );
        let e = parse_authorization("AWS4-HMAC-SHA1 Credential=x").expect_err("should fail");
        assert_eq!(e.error_type, "IncompleteSignatureException");
        let e =
            parse_authorization("AWS4-HMAC-SHA256 Credential=A/B, SignedHeaders=h, Signature=s")
                .expect_err("should fail");
        assert_eq!(e.error_type, "IncompleteSignatureException");
    }
}
