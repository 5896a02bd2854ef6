// WebAuthn for forms marked data-webauthn="create" (register) or "get" (sign in). The server's
// options arrive as JSON in data-options (binary fields base64url); the browser's answer goes back
// as JSON in the form's "credential" field, and the form is submitted as usual.
(function () {
  "use strict";

  function toBytes(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var s = "";
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(o) {
    o.challenge = toBytes(o.challenge);
    o.user.id = toBytes(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    o.extensions = Object.assign({}, o.extensions || {}, { credProps: true });
    return o;
  }

  function requestOptions(o) {
    o.challenge = toBytes(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return o;
  }

  function serialise(cred) {
    var r = cred.response;
    var out = {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || null,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: toB64url(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = toB64url(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = toB64url(r.authenticatorData);
      out.response.signature = toB64url(r.signature);
      out.response.userHandle = r.userHandle ? toB64url(r.userHandle) : null;
    }
    return JSON.stringify(out);
  }

  document.querySelectorAll("form[data-webauthn]").forEach(function (form) {
    var button = form.querySelector("[data-webauthn-start]");
    var status = form.querySelector(".webauthn-status");
    var field = form.querySelector("input[name=credential]");
    if (!button || !field) { return; }
    if (!window.PublicKeyCredential || !navigator.credentials) {
      button.disabled = true;
      if (status) { status.textContent = "This browser cannot use security keys. Choose another method."; }
      return;
    }
    button.addEventListener("click", function () {
      var options = JSON.parse(form.getAttribute("data-options"));
      var mode = form.getAttribute("data-webauthn");
      var call = mode === "create"
        ? navigator.credentials.create({ publicKey: creationOptions(options) })
        : navigator.credentials.get({ publicKey: requestOptions(options) });
      button.disabled = true;
      if (status) { status.textContent = "Waiting for your security key…"; }
      call.then(function (cred) {
        field.value = serialise(cred);
        form.submit();
      }).catch(function (err) {
        button.disabled = false;
        if (status) {
          status.textContent = (err && err.name === "NotAllowedError")
            ? "The request was cancelled or timed out. Try again."
            : "Your security key could not be used. Try again, or choose another method.";
        }
      });
    });
  });
})();
