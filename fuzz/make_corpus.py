#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/), except verify_structured's,
whose inputs are `arbitrary` encodings (its seeds are a sample of a minimized fuzzing corpus).

Tokens use the fixture's key ids and issuers (fuzz/src/setup.rs) with made-up signatures: every
check up to the signature can pass, none can verify (the fixture's keys are made afresh in each
process). Needs the `cryptography` package for the P-384, P-521 and RSA JWKs. Run from fuzz/:
`python3 make_corpus.py`. Regression inputs (files named regression-*) are kept as they are.
"""

import base64
import json
import os
import random

from cryptography.hazmat.primitives.asymmetric import ec, rsa

NOW = 1_700_000_000
A, B = "https://a.fuzz.example", "https://b.fuzz.example"
random.seed(14)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seg(value) -> str:
    text = value if isinstance(value, (str, bytes)) else json.dumps(value, separators=(",", ":"))
    return b64(text.encode() if isinstance(text, str) else text)


def sig(n: int) -> str:
    return b64(bytes(random.randrange(256) for _ in range(n)))


def token(header, claims, signature=None) -> str:
    if signature is None:
        signature = sig(256 if '"RS' in json.dumps(header) else 64)
    return f"{seg(header)}.{seg(claims)}.{signature}"


ES = {"alg": "ES256", "typ": "JWT", "kid": "fuzz-es256"}
RS = {"alg": "RS256", "typ": "JWT", "kid": "fuzz-rs256"}
CLAIMS_A = {"iss": A, "sub": "fuzz", "aud": "api://fuzz", "exp": NOW + 600, "nbf": NOW - 10,
            "iat": NOW - 10, "jti": "j", "scope": "read write"}
CLAIMS_B = dict(CLAIMS_A, iss=B, aud="api://b", tid="t")

TOKENS = {
    "es256-a": token(ES, CLAIMS_A),
    "es256-b": token(ES, CLAIMS_B),
    "rs256-a": token(RS, CLAIMS_A),
    "x5t-only": token({"alg": "ES256", "x5t": "fuzz-x5t-es256"}, CLAIMS_A),
    "b-typ-application-jwt": token(dict(ES, typ="application/jwt"), CLAIMS_B),
    "expired": token(ES, dict(CLAIMS_A, exp=NOW - 61)),
    "not-yet-valid": token(ES, dict(CLAIMS_A, nbf=NOW + 61)),
    "issued-in-future": token(ES, dict(CLAIMS_A, iat=NOW + 61)),
    "b-too-old": token(ES, dict(CLAIMS_B, iat=NOW - 606)),
    "wrong-audience": token(ES, dict(CLAIMS_A, aud=["api://other", "x"])),
    "audience-array": token(ES, dict(CLAIMS_A, aud=["x", "api://fuzz"])),
    "unknown-kid": token(dict(ES, kid="someone-else"), CLAIMS_A),
    "no-kid": token({"alg": "ES256"}, CLAIMS_A),
    "alg-key-mismatch": token(dict(ES, alg="ES384"), CLAIMS_A),
    "alg-none": f"{seg({'alg': 'none'})}.{seg(CLAIMS_A)}.",
    "hs256": token(dict(ES, alg="HS256"), CLAIMS_A, sig(32)),
    "crit": token(dict(ES, crit=["exp"]), CLAIMS_A),
    "crit-null-jku": token(dict(ES, crit=None, jku="https://x", jwk={"kty": "oct"}), CLAIMS_A),
    "escaped-header": token('{"\\u0061lg":"ES256","k\\u0069d":"fuzz-\\u0065s256"}', CLAIMS_A),
    "float-times": token(ES, '{"iss":"%s","aud":"api://fuzz","exp":1.7000006e9,"iat":%d.5}'
                         % (A, NOW)),
    "roles-scp": token(ES, dict(CLAIMS_A, roles=["r", "s"], scp=["a", "b"], scope=None)),
    "deep-claims": token(ES, '{"iss":"%s","aud":"api://fuzz","exp":%d,"x":%s1%s}'
                         % (A, NOW + 600, "[" * 126, "]" * 126)),
    "duplicate-iss": token(ES, '{"iss":"%s","iss":"%s","aud":"api://fuzz","exp":%d}'
                           % (A, B, NOW + 600)),
    "payload-not-utf8": seg(ES) + "." + b64(b'{"iss":"\xff"}') + "." + sig(64),
    "jwe": "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
    "padded": token(ES, CLAIMS_A) + "==",
    "empty-signature": f"{seg(ES)}.{seg(CLAIMS_A)}.",
}

JSON_CASES = [
    '{}', ' { } ', '{"a":1}', '{"a":1,}', '{"a":1 "b":2}', '{"a":[1,2,[],{}]}', '{"a":[1,]}',
    '{"a":{"b":{"c":[true,false,null]}}}', '{"a":{"b"}}', '{"a":-0.5e+10}', '{"a":01}',
    '{"a":1.}', '{"a":.5}', '{"a":-}', '{"a":1e}', '{"a":1e400}', '{"a":-1e400}', '{"a":tru}',
    '{"a":nul}', '{"a":"\\u00e9\\n\\""}', '{"a":"\\x"}', '{"a":"\\u12g4"}',
    '{"a":{"\\udc00":1}}', '{"\\udc00":1}', '{"a":"\\ud800"}', '{"a":"\\ud83d\\ude00"}',
    '{"a":"\\ude00\\ud83d"}', '{"\\u0061":1,"a":2}', '{"a":1}x', '[1]', '"a"', '{"a":1', '',
    '{"a":"\u0001"}', '{"a":"tab\there"}', '{"a":"\u007f\u00e9\U0001f600"}',
    '{"iss":"https://a.example","sub":"s","aud":"b","exp":1700000000,"nbf":1,"iat":2,"jti":"j"}',
    '{"aud":["a","b"],"scope":"x y","roles":["r"],"scp":["p","q"]}',
    '{"aud":[],"roles":null,"scope":[]}', '{"scope":["","\\n"],"scp":["",""]}',
    '{"\\u0069ss":"escaped key","iss":"twice"}', '{"roles":null,"roles":null}',
    '{"exp":1.5e9,"iat":-0,"nbf":0.9}', '{"exp":-1}', '{"exp":1e13}', '{"exp":"1700000000"}',
    '{"exp":1000000000000}', '{"exp":1000000000001}', '{"exp":99999999999999999999}',
    '{"exp":1699999999.99999999999999}', '{"exp":12345678}', '{"exp":null}', '{"aud":[1]}',
    '{"scope":{"a":1}}', '{"roles":"admin"}', '{"other":{"iss":"nested"},"iss":"top"}',
    '{"alg":"ES256","kid":"k","crit":null,"typ":"JWT"}', '{"alg":"ES256","alg":"HS256"}',
    '{"alg":"none"}', '{"alg":"ES256","crit":["exp"]}', '{"alg":"ES256","crit":[1,}',
    '{"x":%s1%s}' % ("[" * 126, "]" * 126), '{"x":%s1%s}' % ("[" * 127, "]" * 127),
    '{"x":%s}' % ('{"y":' * 127 + "1" + "}" * 127),
]

EC_DOC = {"kty": "EC", "crv": "P-256", "kid": "a",
          "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
          "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
RSA_7638 = {"kty": "RSA", "alg": "RS256", "kid": "2011-04-29", "e": "AQAB",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
                 "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4"
                 "QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
                 "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
                 "Cur-kEgU8awapJzKnqDKgw"}
ED = {"kty": "OKP", "crv": "Ed25519", "kid": "peer",
      "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}


def ec_jwk(curve, name, kid):
    numbers = ec.generate_private_key(curve).public_key().public_numbers()
    size = (curve.key_size + 7) // 8
    return {"kty": "EC", "crv": name, "kid": kid, "x": b64(numbers.x.to_bytes(size, "big")),
            "y": b64(numbers.y.to_bytes(size, "big"))}


def rsa_jwk(bits, kid):
    numbers = rsa.generate_private_key(65537, bits).public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "e": "AQAB",
            "n": b64(numbers.n.to_bytes((bits + 7) // 8, "big"))}


P384 = ec_jwk(ec.SECP384R1(), "P-384", "p384")
P521 = ec_jwk(ec.SECP521R1(), "P-521", "p521")
RSA2048 = rsa_jwk(2048, "rsa2048")
ENTRA = dict(RSA2048, kid="entra", use="sig", x5t="fuzz-x5t", issuer="https://login.example/t/v2.0",
             x5c=["MIIBfake"], cloud_instance_name="example")

JWKS_CASES = {
    "doc-example": {"keys": [EC_DOC, {"kty": "EC", "crv": "P-256", "kid": "broken", "x": "AAAA",
                                      "y": "AAAA"},
                             {"kty": "RSA", "use": "enc", "kid": "encryption", "n": "AQAB",
                              "e": "AQAB"}]},
    "rfc7638-rsa": RSA_7638,
    "ed25519": ED,
    "all-types": {"keys": [EC_DOC, RSA_7638, ED, P384, P521, RSA2048, ENTRA]},
    "pinned": {"keys": [dict(EC_DOC, alg="ES256"), dict(P384, alg="ES384"),
                        dict(RSA2048, alg="PS256"), dict(ED, alg="EdDSA")]},
    "pinned-mismatch": {"keys": [dict(EC_DOC, alg="RS256"), dict(ED, alg="ES256")]},
    "key-ops": {"keys": [dict(EC_DOC, key_ops=["verify"]), dict(P384, key_ops=["encrypt"])]},
    "oct-and-unknown": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "XYZ"}]},
    "padded-and-private": {"keys": [dict(EC_DOC, x=EC_DOC["x"] + "=", d="SECRET")]},
    "wrong-curve-length": {"keys": [dict(P384, crv="P-256")]},
    "keys-not-array": {"keys": {}},
    "positional-key": '{"keys":[["EC","a",null,null,null,null,null,"P-256","%s","%s"]]}'
                      % (EC_DOC["x"], EC_DOC["y"]),
    "duplicate-keys-member": '{"keys":[],"keys":[%s]}' % json.dumps(ED),
    "duplicate-jwk-member": '{"kty":"EC","kty":"RSA","n":"AQAB","e":"AQAB"}',
}

AUTH = {
    "bearer": "Bearer {es}",
    "bearer-lower-tabs": "bearer\t{es}  \t",
    "bearer-upper": "BEARER {rs}",
    "basic": "Basic dXNlcjpwYXNz",
    "bearer-alone": "Bearer",
    "bearer-spaces": "Bearer    ",
    "bearer-no-space": "Bearer{es}",
    "two-authorization": "Bearer {es}\nA:Bearer {rs}",
    "token-header": "X:{es}",
    "token-header-bearer": "Basic x\nX:Bearer {es}",
    "two-token-headers": "X:{es}\nX:{rs}",
    "cookie": "C:a=1; session={es}; b=2",
    "cookie-quoted": "C:session=\"{es}\"",
    "cookie-second-header": "C:sessionx=1\nC:session={b}",
    "cookie-empty": "C:session=",
    "all-three": "Bearer {es}\nX:{rs}\nC:session={b}",
    "oversized": "Bearer " + "a" * 1030,
    "obs-text": "Bearer \xe9\xff.a.b",
    "expired": "Bearer {expired}",
}


def write(target: str, name: str, data) -> None:
    directory = os.path.join("corpus", target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("latin-1") if target == "authorization_header" else data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def main() -> None:
    for target in ["verify_bytes", "json_reader", "jwks", "authorization_header"]:
        directory = os.path.join("corpus", target)
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if not name.startswith("regression-"):
                os.remove(os.path.join(directory, name))
    for name, value in TOKENS.items():
        write("verify_bytes", name, value)
    for i, text in enumerate(JSON_CASES):
        write("json_reader", f"case-{i:02}", text)
    for name, value in JWKS_CASES.items():
        write("jwks", name, value if isinstance(value, str) else json.dumps(value))
    values = {"es": TOKENS["es256-a"], "rs": TOKENS["rs256-a"], "b": TOKENS["es256-b"],
              "expired": TOKENS["expired"]}
    for name, line in AUTH.items():
        write("authorization_header", name, line.format(**values) if "{" in line else line)


if __name__ == "__main__":
    main()
