#!/usr/bin/env python3
"""Sign with an Ed25519 key on a PKCS#11 token, for `fwpack --signer-cmd`.

fwpack signs a 40-byte message ("FWPKSIG2" and the SHA-256 of the image
head) with pure Ed25519 (RFC 8032). Tokens do that in a single C_Sign
call: pure EdDSA cannot be computed incrementally, so SoftHSM (and the
PKCS#11 specification) offer CKM_EDDSA as single-part only. This script
makes that one C_Sign call explicitly, with PyKCS11 (pip install PyKCS11),
for tokens whose own tools split the input.

The message is read from $FWPACK_SIGN_INPUT (set by fwpack), else stdin;
the raw 64-byte signature goes to stdout. The PIN comes from the
environment variable named by --pin-env (default PKCS11_PIN), never from
the command line, where other users could read it.

  fwpack sign update.fwi --pubkey release.pub.pem --signer-cmd \\
    'pkcs11-ed25519-sign.py --module /usr/lib/softhsm/libsofthsm2.so \\
       --token release --key-label fwpack-release'
"""

import argparse
import os
import sys

import PyKCS11


def find_slot(lib, label):
    for slot in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(slot).label.strip() == label:
            return slot
    sys.exit(f"no token labelled {label!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--module", default=os.environ.get("PKCS11_MODULE"),
                    help="PKCS#11 library (default $PKCS11_MODULE)")
    ap.add_argument("--token", required=True, help="token label")
    key = ap.add_mutually_exclusive_group(required=True)
    key.add_argument("--key-label", help="CKA_LABEL of the private key")
    key.add_argument("--key-id", help="CKA_ID of the private key, in hex")
    ap.add_argument("--pin-env", default="PKCS11_PIN",
                    help="environment variable holding the user PIN")
    args = ap.parse_args()
    if not args.module:
        sys.exit("no PKCS#11 module: pass --module or set PKCS11_MODULE")
    pin = os.environ.get(args.pin_env)
    if pin is None:
        sys.exit(f"${args.pin_env} is not set")

    source = os.environ.get("FWPACK_SIGN_INPUT")
    if source:
        with open(source, "rb") as f:
            message = f.read()
    else:
        message = sys.stdin.buffer.read()

    lib = PyKCS11.PyKCS11Lib()
    lib.load(args.module)
    session = lib.openSession(find_slot(lib, args.token))
    try:
        session.login(pin)
        template = [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                    (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC_EDWARDS)]
        if args.key_label:
            template.append((PyKCS11.CKA_LABEL, args.key_label))
        else:
            template.append((PyKCS11.CKA_ID, bytes.fromhex(args.key_id)))
        keys = session.findObjects(template)
        if len(keys) != 1:
            sys.exit(f"expected one Ed25519 private key, found {len(keys)}")
        # No mechanism parameter: pure Ed25519, as fwpack verifies.
        mechanism = PyKCS11.Mechanism(PyKCS11.CKM_EDDSA, None)
        signature = bytes(session.sign(keys[0], message, mechanism))
        session.logout()
    finally:
        session.closeSession()
    if len(signature) != 64:
        sys.exit(f"token returned {len(signature)} bytes, not an Ed25519 "
                 "signature")
    sys.stdout.buffer.write(signature)


if __name__ == "__main__":
    main()
