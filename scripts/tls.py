"""Makes the local services' certificates, once, into one directory (never committed).

    python scripts/tls.py DIR [HOST...]

HOSTs are further DNS names of the server certificate (the Docker example's `kafka`,
`clickhouse`).
Writes, for the TLS listeners of the local Kafka and ClickHouse front and for the tests:

- ca.pem, ca.key                 the local CA
- server.pem, server.key         127.0.0.1 / localhost, signed by the CA
- server.p12                     the same for Kafka's keystore (password in keystore-password)
- server-expired.pem, .key       like server, but its validity ended in 2021
- client.pem, client.key         a client certificate signed by the CA (optional mTLS)
- client-expired.pem, .key       a client certificate that expired in 2021
- other-ca.pem                   a CA nobody uses: "unknown CA" for the tests
- kafka-password                 the SCRAM and PLAIN password of the local user `hogstream`
- clickhouse-password            the password of the ClickHouse front's user `hogstream`

Existing files are kept, so certificates stay stable across restarts.
"""

import datetime
import ipaddress
import os
import secrets
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
LONG = datetime.timedelta(days=3650)


def key():
    return ec.generate_private_key(ec.SECP256R1())


def name(common):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def ca_cert(k, common):
    return (
        x509.CertificateBuilder()
        .subject_name(name(common))
        .issuer_name(name(common))
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + LONG)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(k, hashes.SHA256())
    )


def leaf(k, common, ca, ca_key, usage, start, end, san=True, hosts=()):
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(common))
        .issuer_name(ca.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                + [x509.DNSName(h) for h in hosts]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def write(path, data, private=False):
    with open(path, "wb") as f:
        f.write(data)
    if private:
        os.chmod(path, 0o600)


def pem_cert(c):
    return c.public_bytes(serialization.Encoding.PEM)


def pem_key(k):
    return k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def main():
    out, hosts = sys.argv[1], sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    p = lambda f: os.path.join(out, f)  # noqa: E731
    # The last file written: its presence means the set is complete.
    if os.path.exists(p("clickhouse-password")):
        return
    ca_key = key()
    ca = ca_cert(ca_key, "hogstream local CA")
    write(p("ca.pem"), pem_cert(ca))
    write(p("ca.key"), pem_key(ca_key), private=True)
    other_key = key()
    write(p("other-ca.pem"), pem_cert(ca_cert(other_key, "some other CA")))

    past = (datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
            datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc))
    current = (NOW - datetime.timedelta(days=1), NOW + LONG)
    for stem, usage, (start, end) in [
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, current),
        ("server-expired", ExtendedKeyUsageOID.SERVER_AUTH, past),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, current),
        ("client-expired", ExtendedKeyUsageOID.CLIENT_AUTH, past),
    ]:
        k = key()
        c = leaf(k, f"hogstream {stem}", ca, ca_key, usage, start, end, hosts=hosts)
        write(p(f"{stem}.pem"), pem_cert(c))
        write(p(f"{stem}.key"), pem_key(k), private=True)
        if stem == "server":
            password = secrets.token_urlsafe(18)
            write(p("keystore-password"), password.encode(), private=True)
            keystore = pkcs12.serialize_key_and_certificates(
                b"server", k, c, [ca],
                serialization.BestAvailableEncryption(password.encode()),
            )
            write(p("server.p12"), keystore, private=True)
    for secret in ["kafka-password", "clickhouse-password"]:
        write(p(secret), secrets.token_urlsafe(18).encode(), private=True)


if __name__ == "__main__":
    main()
