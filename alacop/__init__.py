"""AlaCOP Portal: a CJIS-ready sign-in portal and identity provider."""

__version__ = "0.1.0"
