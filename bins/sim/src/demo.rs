//! `kmstool-sim demo`: the whole flow on loopback with nothing to set up, narrated.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::attestation::AttestationDocument;
use anyhow::Context as _;
use kmstool_core::address::Address;
use kmstool_core::instance::InstanceClient;
use kmstool_core::protocol::{CommandArgs, Decrypt, EncryptionContext};
use sha2::{Digest as _, Sha256};

use crate::local::{Local, LocalOptions, REGION};

/// The message the demo encrypts and gets back.
pub const MESSAGE: &str = "Hello, KMS!";

/// Runs the demo, writing the narration to `out`; returns the decrypted message.
pub async fn run(out: &mut dyn std::io::Write) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut say = |text: String| {
        let _ = writeln!(out, "{text}");
    };
    say("kmstool demo: a Nitro enclave, its parent instance and AWS KMS, all simulated on this machine.".into());
    say(String::new());

    let local = Local::start(LocalOptions::default()).await?;
    let sim = local.nsm.sim();
    say("1. Simulated Nitro Secure Module".into());
    say(format!("   module id     {}", sim.module_id()));
    say(format!(
        "   root CA       SHA-256 {}",
        short_hex(&Sha256::digest(sim.root_der()))
    ));
    say(String::new());

    let key = local.kms.create_key("kmstool demo key");
    let context: EncryptionContext = [("app".to_owned(), "demo".to_owned())].into();
    let ciphertext = local
        .kms
        .encrypt(&key.key_id, MESSAGE.as_bytes(), &context)
        .map_err(|e| anyhow::anyhow!("emulator Encrypt: {e:?}"))?;
    say(format!(
        "2. KMS emulator at https://{} (as kms.{REGION}.amazonaws.com)",
        local.kms.local_addr()
    ));
    say(format!("   created key   {}", key.arn));
    say(format!(
        "   encrypted     {MESSAGE:?} with context app=demo -> {} byte ciphertext",
        ciphertext.len()
    ));
    say(String::new());

    say(format!("3. kmstool-enclave listening on {}", local.enclave));
    say(format!(
        "   KMS through   tcp:{} (the vsock-proxy's place), TLS to kms.{REGION}.amazonaws.com",
        local.kms.local_addr()
    ));
    say(String::new());

    say("4. kmstool-instance -> enclave: SetClient (credentials, region), then Decrypt".into());
    let exchange_started = Instant::now();
    let plaintext = instance_decrypt(&local, ciphertext, context).await?;
    let took = exchange_started.elapsed();
    say(format!(
        "   reply in      {:.1} ms",
        took.as_secs_f64() * 1e3
    ));
    say(String::new());

    say("5. What the enclave attested (document from the NSM, sent to KMS as Recipient)".into());
    let document = local
        .nsm
        .last_document()
        .context("the enclave asked for no attestation")?;
    describe_document(&document, &mut say)?;
    say(String::new());

    say("6. What KMS was asked, and what came back".into());
    let stats = local.kms.stats();
    let record = stats
        .recent
        .iter()
        .rev()
        .find(|r| r.target.as_deref() == Some("TrentService.Decrypt"))
        .context("the emulator saw no Decrypt")?;
    say(format!(
        "   request       TrentService.Decrypt, EncryptionContext keys {:?}, Recipient with a {}-character attestation document, SigV4-signed",
        record.encryption_context_keys,
        record.attestation_document_chars.unwrap_or(0)
    ));
    say(format!(
        "   answer        HTTP {}, CiphertextForRecipient of {} characters (CMS EnvelopedData for the enclave's key), no Plaintext",
        record.status,
        record.ciphertext_for_recipient_chars.unwrap_or(0)
    ));
    say(String::new());

    let message = String::from_utf8(plaintext).context("plaintext is not UTF-8")?;
    say(format!(
        "   whole demo    {:.2} s, start-up included",
        started.elapsed().as_secs_f64()
    ));
    say(String::new());
    say(format!("7. Decrypted message: {message}"));
    local.stop().await?;
    Ok(message)
}

/// The `kmstool-instance` flow on its own runtime (smol), on a separate thread.
async fn instance_decrypt(
    local: &Local,
    ciphertext: Vec<u8>,
    encryption_context: EncryptionContext,
) -> anyhow::Result<Vec<u8>> {
    let address: Address = local.enclave.clone();
    let credentials = local.credentials.clone();
    let request = CommandArgs::Decrypt(Decrypt {
        ciphertext,
        encryption_context,
        key_id: None,
        encryption_algorithm: None,
        grant_tokens: Vec::new(),
        dry_run: false,
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = smol::block_on(async {
            let mut stream = kmstool_runtime_smol::net::connect(&address)
                .await
                .map_err(|e| format!("connect {address}: {e}"))?;
            let client = InstanceClient::new(
                &credentials,
                Some(REGION),
                request,
                Instant::now(),
                Duration::from_secs(30),
            );
            kmstool_runtime_smol::client::exchange(&mut stream, client)
                .await
                .map(|r| r.plaintext.expose().to_vec())
                .map_err(|e| e.to_string())
        });
        let _ = tx.send(result);
    });
    rx.await
        .context("instance thread")?
        .map_err(|e| anyhow::anyhow!("Error: {e}"))
}

fn describe_document(document: &[u8], say: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    let parsed =
        AttestationDocument::parse(document).context("parsing the attestation document")?;
    let doc = &parsed.doc;
    say(format!(
        "   size          {} bytes, COSE_Sign1 signed ES384",
        document.len()
    ));
    say(format!("   module id     {}", doc.module_id));
    say(format!(
        "   timestamp     {} ({} ms since 1970)",
        rfc3339_millis(doc.timestamp).unwrap_or_else(|| "out of range".to_owned()),
        doc.timestamp
    ));
    for index in [0u16, 1, 2] {
        if let Some(value) = doc.pcrs.get(&index) {
            say(format!("   PCR{index}          {}", short_hex(value)));
        }
    }
    say(PCR0_NOTE.into());
    if let Some(public_key) = &doc.public_key {
        say(format!(
            "   public key    RSA-2048, SPKI SHA-256 {} (KMS encrypts to it)",
            short_hex(&Sha256::digest(public_key))
        ));
    }
    say(format!(
        "   certificates  leaf + {} in the bundle, to the simulated Nitro root",
        doc.cabundle.len()
    ));
    Ok(())
}

/// What the demo says about the PCR0 it shows.
pub const PCR0_NOTE: &str = "   (these PCRs are the simulator's stand-in measurements, not an \
enclave image's: on Nitro, `nitro-cli build-enclave` prints your image's real PCR0, the value a \
key policy's kms:RecipientAttestation:ImageSha384 names)";

/// Formats milliseconds since 1970 as RFC 3339 UTC with milliseconds
/// (`2026-12-05T19:40:01.123Z`); `None` past the year 9999.
pub fn rfc3339_millis(millis: u64) -> Option<String> {
    let nanos = i128::from(millis) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    if at.year() > 9999 {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    ))
}

fn short_hex(bytes: &[u8]) -> String {
    let full = hex::encode(bytes);
    let mut out = String::new();
    if full.len() > 32 {
        let _ = write!(out, "{}…{}", &full[..16], &full[full.len() - 16..]);
    } else {
        out.push_str(&full);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rfc3339_millis;

    #[test]
    fn timestamps_read_as_rfc3339_utc_with_milliseconds() {
        assert_eq!(
            rfc3339_millis(0).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            rfc3339_millis(1_796_499_601_123).as_deref(),
            Some("2026-12-05T19:40:01.123Z")
        );
        assert_eq!(
            rfc3339_millis(253_402_300_799_999).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(rfc3339_millis(253_402_300_800_000), None);
        assert_eq!(rfc3339_millis(u64::MAX), None);
    }
}
