"""The OpenID Connect provider: authorization code flow with PKCE, tokens, userinfo, keys and discovery."""
