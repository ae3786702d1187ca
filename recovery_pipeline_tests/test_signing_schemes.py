"""Sign/verify per provider scheme (pure functions, no server)."""

from __future__ import annotations

import base64
import time

import pytest

from recovery_pipeline.webhooks import signing as s

BODY = b'{"id": "evt_1", "type": "recovery_action"}'
NOW = 1_767_607_200  # fixed clock


# --- Standard Webhooks --------------------------------------------------------------------------

def test_standard_webhooks_published_test_vector_signs_and_verifies():
    secret, msg_id, ts = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert s.sign_standard(secret, msg_id, ts, body) == expected
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": expected}
    s.verify_standard(headers, body, secret, now=ts + 10)


def test_standard_accepts_any_signature_in_space_separated_list():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    h = s.signed_headers("standard", secret, BODY, event_id="msg_1", now=NOW)
    other = "v1," + base64.b64encode(b"x" * 32).decode()
    h["webhook-signature"] = f"{other} v2,abc {h['webhook-signature']}"
    s.verify_standard(h, BODY, secret, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301])
def test_standard_rejects_timestamp_outside_five_minutes(skew):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    h = s.signed_headers("standard", secret, BODY, event_id="msg_1", now=NOW)
    with pytest.raises(s.StaleTimestamp):
        s.verify_standard(h, BODY, secret, now=NOW + skew)
    s.verify_standard(h, BODY, secret, now=NOW + skew // 2)  # inside the window: fine


def test_standard_rejects_tampered_body_wrong_secret_and_missing_header():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    h = s.signed_headers("standard", secret, BODY, event_id="msg_1", now=NOW)
    with pytest.raises(s.SignatureError):
        s.verify_standard(h, BODY + b" ", secret, now=NOW)
    with pytest.raises(s.SignatureError):
        s.verify_standard(h, BODY, "whsec_" + base64.b64encode(b"another key 123").decode(), now=NOW)
    with pytest.raises(s.MissingSignature):
        s.verify_standard({k: v for k, v in h.items() if k != "webhook-signature"}, BODY, secret, now=NOW)


# --- Stripe -------------------------------------------------------------------------------------

def test_stripe_signature_verifies_and_matches_stripe_library():
    import stripe

    header = s.sign_stripe("whsec_abc", BODY, NOW)
    assert header.startswith(f"t={NOW},v1=")
    s.verify_stripe({"Stripe-Signature": header}, BODY, "whsec_abc", now=NOW + 5)
    with pytest.raises(stripe.SignatureVerificationError):  # the library agrees it is now stale
        stripe.Webhook.construct_event(BODY.decode(), header, "whsec_abc", tolerance=300)


def test_stripe_accepts_several_v1_signatures_during_key_rotation():
    old, new = "whsec_old_key", "whsec_new_key"
    t, sig_old = s.sign_stripe(old, BODY, NOW).split(",")
    _, sig_new = s.sign_stripe(new, BODY, NOW).split(",")
    header = f"{t},{sig_old},{sig_new}"
    s.verify_stripe({"stripe-signature": header}, BODY, new, now=NOW)
    s.verify_stripe({"stripe-signature": header}, BODY, old, now=NOW)
    with pytest.raises(s.SignatureError):
        s.verify_stripe({"stripe-signature": header}, BODY, "whsec_third", now=NOW)


def test_stripe_rejects_stale_tampered_and_missing():
    h = {"Stripe-Signature": s.sign_stripe("whsec_abc", BODY, NOW)}
    with pytest.raises(s.StaleTimestamp):
        s.verify_stripe(h, BODY, "whsec_abc", now=NOW + 301)
    with pytest.raises(s.SignatureError):
        s.verify_stripe(h, BODY.replace(b"evt_1", b"evt_2"), "whsec_abc", now=NOW)
    with pytest.raises(s.MissingSignature):
        s.verify_stripe({}, BODY, "whsec_abc", now=NOW)


def test_stripe_real_clock_default_accepts_fresh_signature():
    h = s.signed_headers("stripe", "whsec_abc", BODY)
    s.verify_stripe(h, BODY, "whsec_abc")


# --- Revtain ------------------------------------------------------------------------------------

def test_revtain_hex_hmac_of_raw_body():
    import hashlib
    import hmac

    assert s.sign_revtain("whsec_r", BODY) == hmac.new(b"whsec_r", BODY, hashlib.sha256).hexdigest()
    h = s.signed_headers("revtain", "whsec_r", BODY)
    s.verify_revtain(h, BODY, "whsec_r")
    with pytest.raises(s.SignatureError):
        s.verify_revtain(h, BODY + b"\n", "whsec_r")
    with pytest.raises(s.SignatureError):
        s.verify_revtain(h, BODY, "whsec_other")
    with pytest.raises(s.MissingSignature):
        s.verify_revtain({"content-type": "application/json"}, BODY, "whsec_r")


# --- Butter -------------------------------------------------------------------------------------

def test_butter_signature_covers_body_plus_expiration():
    import hashlib
    import hmac

    sig = s.sign_butter("bsec", BODY, NOW + 60)
    assert sig == hmac.new(b"bsec", BODY + b"+" + str(NOW + 60).encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("expiry_header", [s.BUTTER_EXPIRES, s.BUTTER_EXPIRATION])
def test_butter_accepts_both_expiry_header_names(expiry_header):
    h = s.signed_headers("butter", "bsec", BODY, event_id="d1", now=NOW, butter_expiry_header=expiry_header)
    s.verify_butter(h, BODY, "bsec", now=NOW)


def test_butter_rejects_expired_tampered_wrong_secret_and_missing():
    h = s.signed_headers("butter", "bsec", BODY, event_id="d1", now=NOW, butter_ttl=60)
    with pytest.raises(s.StaleTimestamp):
        s.verify_butter(h, BODY, "bsec", now=NOW + 61)
    with pytest.raises(s.SignatureError):
        s.verify_butter(h, BODY + b" ", "bsec", now=NOW)
    with pytest.raises(s.SignatureError):
        s.verify_butter(h, BODY, "other", now=NOW)
    # moving the expiry forward without re-signing is caught: the signature covers it
    with pytest.raises(s.SignatureError):
        s.verify_butter({**h, s.BUTTER_EXPIRES: str(NOW + 9999)}, BODY, "bsec", now=NOW)
    with pytest.raises(s.MissingSignature):
        s.verify_butter({k: v for k, v in h.items() if k != s.BUTTER_SIGNATURE}, BODY, "bsec", now=NOW)


# --- Slicker ------------------------------------------------------------------------------------

def test_slicker_bearer_and_basic_auth():
    s.verify_slicker({"Authorization": s.slicker_auth_header(token="tok")}, token="tok", basic=None)
    s.verify_slicker({"authorization": s.slicker_auth_header(basic="u:p")}, token="tok", basic="u:p")
    with pytest.raises(s.SignatureError):
        s.verify_slicker({"Authorization": "Bearer nope"}, token="tok", basic=None)
    with pytest.raises(s.SignatureError):
        s.verify_slicker({"Authorization": s.slicker_auth_header(basic="u:wrong")}, token="tok", basic="u:p")
    with pytest.raises(s.SignatureError):  # basic not configured: basic credentials are not accepted
        s.verify_slicker({"Authorization": s.slicker_auth_header(basic="u:p")}, token="tok", basic=None)
    with pytest.raises(s.MissingSignature):
        s.verify_slicker({}, token="tok", basic=None)


# --- redaction and reasons ------------------------------------------------------------------------

def test_redacted_headers_and_error_reasons_hold_no_secret():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    for provider, key in [("revtain", "whsec_r"), ("butter", "bsec"), ("standard", secret),
                          ("stripe", "whsec_abc"), ("slicker", "tok-secret")]:
        h = s.signed_headers(provider, key, BODY, event_id="e1", now=time.time())
        red = s.redact_headers(h)
        sig_values = [v for k, v in h.items() if k.lower() in s.SENSITIVE_HEADERS]
        assert sig_values, provider
        text = repr(red)
        assert key not in text and not any(v in text for v in sig_values), provider
        try:
            s.verify(provider, h, BODY + b"x", "wrong" if provider != "slicker" else None,
                     token="wrong-token", basic=None)
        except s.SignatureError as exc:
            assert key not in exc.reason and not any(v in exc.reason for v in sig_values)
        else:
            assert provider == "slicker" and False, "wrong credentials were accepted"
