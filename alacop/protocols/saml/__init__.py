"""A narrow SAML 2.0 identity provider: HTTP-Redirect AuthnRequests in, signed HTTP-POST Responses out.

XML is parsed with defusedxml (which refuses DTDs and entities) and then lxml; Responses and Assertions
are built here and signed with signxml (exclusive canonicalisation, RSA-SHA256). Nothing of XML
signature or canonicalisation is written here.
"""
