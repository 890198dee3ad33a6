#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seed inputs: the real bytes in fixtures/ and
# core/tests/fixtures/kms/, reshaped to each target's input layout, plus a few hand-written
# valid inputs per target. Idempotent: every seed has a fixed name (`seed-*`) and is rewritten
# with the same bytes; what libFuzzer adds (hash-named files) is left alone.
#
#   fuzz/seed.sh            # from anywhere; needs bash, coreutils (base64) and the fixtures
#
# Structured targets (Arbitrary-derived inputs) get their seeds encoded here; each target's
# header comment describes its layout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fixtures=$root/fixtures
recorded=$root/core/tests/fixtures/kms
corpus=$root/fuzz/corpus
[ -d "$fixtures" ] || { echo "seed.sh: $fixtures is missing" >&2; exit 1; }

# put TARGET NAME: stdin becomes corpus/TARGET/seed-NAME.
put() {
    mkdir -p "$corpus/$1"
    cat >"$corpus/$1/seed-$2"
}
# bytes ESCAPED...: the arguments with \xHH, \n, \r, \\ expanded (printf %b), concatenated.
bytes() { printf '%b' "$@"; }
# le16 / le32 N: N little-endian.
le16() { bytes "$(printf '\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)))"; }
le32() { le16 $(($1 & 65535)); le16 $(($1 >> 16 & 65535)); }
# variant INDEX COUNT: the u32 with which `arbitrary` picks enum variant INDEX of COUNT.
variant() { le32 $((($1 * 4294967296 + $2 - 1) / $2)); }
# body FILE: an HTTP response without its head.
body() {
    local response
    response=$(<"$1")
    printf '%s' "${response#*$'\r\n\r\n'}"
}
# wire_payloads FILE: the b'...' payloads of a capture, one escaped string per line.
wire_payloads() { sed -n "s/^[^b]*b'\([^']*\)'.*/\1/p" "$1"; }

# --- the enclave protocol: frames from the captures of the C tool, and our extensions --------
commands=(
    '{"Operation":"SetClient","AwsAccessKeyId":"AKIDEXAMPLE","AwsSecretAccessKey":"SECRET","AwsSessionToken":"TOKEN","AwsRegion":"us-east-1"}'
    '{"Operation":"Decrypt","Ciphertext":"AQIDBA==","EncryptionContext":{"purpose":"test"},"KeyId":"alias/app","EncryptionAlgorithm":"SYMMETRIC_DEFAULT","GrantTokens":["g1"],"RequestId":"r-1"}'
    '{"Operation":"GenerateDataKey","KeyId":"alias/app","KeySpec":"AES_128","EncryptionContext":{"k":"v"}}'
    '{"Operation":"GenerateDataKey","KeyId":"arn:aws:kms:us-east-1:111122223333:key/k","NumberOfBytes":64}'
    '{"Operation":"GenerateRandom","NumberOfBytes":1024,"RequestId":null}'
    '{ "Operation": "Decrypt", "Ciphertext": "aGVsbG8gd29ybGQ=", "EncryptionContext": { "purpose": "test", "k2": "v2" } }'
)
frame_prefix='\xff\x0f\x00' # frame_decoder: max 4095, no cuts
n=0
for file in "$fixtures/upstream-wire/instance-enclave-frames.log" "$fixtures/upstream-wire/enclave-error-frames.txt"; do
    stream=""
    while IFS= read -r payload; do
        n=$((n + 1))
        bytes "${payload%%\\x00*}" | put command_json "wire-$n"
        bytes "$frame_prefix" "$payload" | put frame_decoder "wire-$n"
        stream+=$payload
    done < <(wire_payloads "$file")
    bytes "$frame_prefix" "$stream" | put frame_decoder "wire-all-$n"
    # The same stream cut at bytes 1, 7 and 300 (cut list: 01 <u16> ..., ended by 00).
    bytes '\xff\x0f\x01\x01\x00\x01\x07\x00\x01\x2c\x01\x00' "$stream" | put frame_decoder "wire-cut-$n"
done
for i in "${!commands[@]}"; do
    printf '%s' "${commands[$i]}" | put command_json "ours-$i"
    bytes '\x40\x00\x00' "${commands[$i]}" '\x00' "${commands[$i]}" '\x00' | put frame_decoder "ours-$i"
done

# --- KMS's HTTP responses (recorded) and hand-written shapes -------------------------------
for file in "$recorded"/*.http; do
    name=$(basename "$file" .http)
    { bytes '\x00\x00'; cat "$file"; } | put http_response "$name"
    { bytes '\x01\x01\x10\x00\x00'; cat "$file"; } | put http_response "$name-eof-cut"
    body "$file" | put kms_response "$name"
done
for file in "$fixtures"/upstream-wire/*.http; do
    # Requests, not responses: their bodies are KMS JSON all the same.
    body "$file" | put kms_response "request-$(basename "$file" .http)"
done
http_shapes=(
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-amz-json-1.1\r\n\r\n5;ext=1\r\n{"a":\r\n3\r\n"b"\r\n1\r\n}\r\n0\r\nx-trailer: t\r\n\r\n'
    'HTTP/1.0 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n\r\n{"KeyId":"k"}'
    'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}'
    'HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n'
    'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nContent-Length: 19\r\n\r\n<html>busy</html>\r\n'
    '\r\nHTTP/1.1 200 OK\nContent-Length: 0\n\n'
)
for i in "${!http_shapes[@]}"; do
    bytes '\x01\x00' "${http_shapes[$i]}" | put http_response "shape-$i"
done
kms_bodies=(
    '{"KeyId":"arn:aws:kms:us-east-1:111122223333:key/k","Plaintext":"","CiphertextBlob":"AQID","CiphertextForRecipient":null,"EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}'
    '{"__type":"com.amazonaws.kms#KMSInvalidStateException","message":"pending deletion"}'
    '{"code":"ThrottlingException","Message":"slow down"}'
    '<html><body>502 Bad Gateway</body></html>'
    '{"KeyId":"a","KeyId":"b"}'
    ' \n{"Plaintext":"AAAA","Other":[1,{"x":null}]}'
)
for i in "${!kms_bodies[@]}"; do
    printf '%s' "${kms_bodies[$i]}" | put kms_response "shape-$i"
done

# --- CMS: the real KMS captures, and the envelopes inside the recorded responses ------------
for file in "$fixtures"/kms/*.ber; do
    put cms_unwrap "$(basename "$file" .ber)" <"$file"
done
for file in "$recorded"/*-ok.http; do
    grep -o '"CiphertextForRecipient":"[^"]*"' "$file" | cut -d'"' -f4 | base64 -d |
        put cms_unwrap "$(basename "$file" .http)"
done
# cms_envelope: mode (u32 variant of 3), layout byte, chunk u16, 16-byte IV, then data.
iv='\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f'
{ variant 0 3; bytes '\x00'; le16 1000; bytes "$iv" 'Hello, KMS!'; } | put cms_envelope plaintext-kms
{ variant 0 3; bytes '\x00'; le16 7; bytes "$iv"; head -c 100 "$fixtures/kms/real-kms-decrypt-with-key.ber"; } |
    put cms_envelope plaintext-chunked
{ variant 0 3; bytes '\x02'; le16 0; bytes "$iv"; } | put cms_envelope plaintext-empty-der
{ variant 1 3; bytes '\x01'; le16 0; bytes "$iv" '0123456789abcdef0123456789abcdef'; } |
    put cms_envelope ciphertext-primitive
{ variant 2 3; bytes '\x40\x01\x00'; le16 1000; bytes "$iv" '0123456789abcdef'; } |
    put cms_envelope corrupt-key

# --- attestation documents ------------------------------------------------------------------
for file in "$fixtures"/attestation/*.cose; do
    put attestation "$(basename "$file" .cose)" <"$file"
done

# --- the parent's view: enclave replies (request kind byte, no cuts, stream) ----------------
ok='{ "Status": "Ok" }\x00'
n=0
stream=""
while IFS= read -r payload; do
    case $payload in '{ "Status"'*) stream+=$payload ;; esac
done < <(grep ' S->C ' "$fixtures/upstream-wire/instance-enclave-frames.log" | wire_payloads /dev/stdin)
bytes '\x00\x00' "$stream" | put instance_reply upstream-sessions
bytes '\x00\x00' "$ok" '{"Status":"Ok","Message":"SGVsbG8sIEtNUyE=","KeyId":"k","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}\x00' |
    put instance_reply decrypt
bytes '\x01\x00' "$ok" '{"Status":"Ok","Message":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","CiphertextBlob":"AQID","KeyId":"k"}\x00' |
    put instance_reply generate-data-key
bytes '\x02\x01\x05\x00\x00' "$ok" '{"Status":"Ok","Message":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}\x00' |
    put instance_reply generate-random-cut
bytes '\x03\x00' "$ok" '{"Status":"Error","Message":"Could not decrypt ciphertext: AccessDeniedException: no","ErrorKind":"Kms","KmsErrorType":"AccessDeniedException","KmsStatus":400,"RequestId":"r"}\x00' |
    put instance_reply kms-error
bytes '\x00\x00' '{ "Status": "Error", "Message": "Could not read credentials" }\x00' |
    put instance_reply set-client-error

# --- IMDSv2: after-byte (0 = end of stream), cut byte, responses separated by ||| ------------
imds_ok='HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\nAQAEAExampleSessionToken==|||HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nmy-instance-role\n|||HTTP/1.1 200 OK\r\nContent-Length: 169\r\n\r\n{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG","Token":"IQoJb3JpZ2luX2Vj","Expiration":"2026-11-29T10:26:21Z"}'
bytes '\x00\x10' "$imds_ok" | put imds success
bytes '\x01\x03' "$imds_ok" | put imds success-no-eof
bytes '\x00\x00' 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n' | put imds token-refused
bytes '\x00\x05' 'HTTP/1.1 200 OK\r\n\r\ntoken|||HTTP/1.1 404 Not Found\r\n\r\n' | put imds no-role
bytes '\x00\x00' 'HTTP/1.1 200 OK\r\n\r\ntoken|||HTTP/1.1 200 OK\r\n\r\nrole\r\n|||HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1b\r\n{"Code":"AssumeRoleUnauthor\r\n0c\r\nizedAccess"}\r\n0\r\n\r\n' |
    put imds code-error

# --- container credentials: after-byte, cut byte, FLAGS URI|||TOKEN|||RESPONSE ---------------
# FLAGS bit 0: relative URI (else full), bit 1: token from a file (else the variable).
container_ok='HTTP/1.1 200 OK\r\nContent-Length: 160\r\n\r\n{"RoleArn":"arn:aws:iam::1:role/r","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"wJalrXUtnFEMI","Token":"IQoJb3JpZ2luX2Vj","Expiration":"2026-11-29T10:26:21Z"}'
bytes '\x00\x10\x02' 'http://169.254.170.23/v1/credentials|||eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n|||' "$container_ok" |
    put container eks-pod-identity
bytes '\x01\x00\x01' '/v2/credentials/7c2e4d4f||||||' "$container_ok" | put container ecs
bytes '\x00\x00\x00' 'http://127.0.0.1:9911/creds?x=1|||token|||HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n' |
    put container refused
bytes '\x00\x00\x00' 'https://creds.example.com/v1|||t|||' | put container https

# --- AWS credentials/config files and credential_process output: FLAGS PROFILE|||FILE|||OUTPUT
process_ok='{"Version":1,"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG","SessionToken":"IQoJb3JpZ2luX2Vj","Expiration":"2030-01-01T00:00:00Z"}'
bytes '\x00' 'default|||[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = wJalrXUtnFEMI ; c\n# x\n[other]\naws_access_key_id=A\n|||' "$process_ok" |
    put aws_profile credentials-file
bytes '\x01' 'app|||[default]\nregion = eu-west-1\n[profile app]\ncredential_process = /usr/bin/creds --json\nregion=us-east-1\ns3 =\n  max_concurrent_requests = 2\n[profile role]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = default\n|||{"Version":2}' |
    put aws_profile config-file

# --- whole enclave sessions: region byte, attempts byte, then steps -------------------------
# Step variants of fuzz_targets/session.rs (13 in all), each step preceded by 01, list ended by 00.
steps=13
cmd() { bytes '\x01'; variant 0 $steps; bytes "$(printf '\\x%02x' "$1")"; }
attest() { bytes '\x01'; variant 1 $steps; bytes "$1"; }
recorded() { bytes '\x01'; variant 2 $steps; bytes "$(printf '\\x%02x' "$1")"; le16 "${2:-0}"; bytes '\x00'; }
advance() { bytes '\x01'; variant 3 $steps; le16 "$1"; }
timeout() { bytes '\x01'; variant 4 $steps; }
kms_eof() { bytes '\x01'; variant 5 $steps; }
kms_failure() { bytes '\x01'; variant 6 $steps; bytes "$1"; }
client_eof() { bytes '\x01'; variant 7 $steps; }
take() { bytes '\x01'; variant 8 $steps; le16 "$1"; }
kms_sent() { bytes '\x01'; variant 9 $steps; bytes "$1"; }
stale() { bytes '\x01'; variant 10 $steps; bytes "$1" "$2"; }
end() { bytes '\x00'; }
# Commands: 0 SetClient (us-east-1), 1 Decrypt, 2 GenerateDataKey, 3 GenerateRandom 32,
# 4 SetClient (no region), 5 Decrypt (RequestId, context), 6 GenerateDataKey AES_128, 7 unknown,
# 8 SetClient (eu-west-1). Responses: 0 decrypt, 1 data key, 2 random, 3 AccessDenied,
# 4 InvalidCiphertext, 5 Throttling, 6 internal 500.
{ bytes '\x00\x00'; cmd 0; take 65535; cmd 1; attest '\x01'; kms_sent '\x01'; recorded 0 300; client_eof; take 65535; end; } |
    put session decrypt
{
    bytes '\x00\x00'; cmd 0
    cmd 2; attest '\x01'; recorded 1 17
    cmd 3; attest '\x01'; recorded 2
    cmd 6; attest '\x01'; recorded 1
    cmd 5; attest '\x01'; recorded 4; client_eof; take 100; take 65535; end
} | put session generate
{
    bytes '\x00\x02'; cmd 0; cmd 1; attest '\x01'
    recorded 5; advance 500; timeout
    kms_failure '\x00'; advance 900; timeout
    recorded 0 9; take 65535; end
} | put session retries
{
    bytes '\x01\x00'; cmd 7; cmd 1; cmd 8; cmd 4
    cmd 5; attest '\x00'
    cmd 1; attest '\x01'; recorded 3
    cmd 1; attest '\x01'; recorded 6
    cmd 1; attest '\x01'; kms_eof
    cmd 1; attest '\x01'; kms_failure '\x01'
    cmd 1; attest '\x01'; kms_sent '\x01'; kms_eof; kms_sent '\x00'; kms_eof
    stale '\x00' '\x00'; stale '\x01' '\x03'; take 65535; end
} | put session errors
{
    bytes '\x00\x01'; cmd 0; cmd 1; attest '\x01'; advance 65535; timeout
    stale '\x00' '\x00'; advance 65535; advance 65535; advance 65535; advance 65535; advance 65535
    timeout; end
} | put session timeouts

echo "seed.sh: $(find "$corpus" -name 'seed-*' | wc -l) seeds in $corpus"
