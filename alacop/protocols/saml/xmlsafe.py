"""Parsing untrusted XML: defusedxml first (no DTD, no entities, no external references), then lxml.

defusedxml's check runs on the same bytes lxml then parses, so a document lxml accepts has already been
shown to carry no DTD (XXE, billion laughs). The lxml parser is locked down as well, in case that ever
changes: no network, no entity resolution, no DTD loading, no huge trees. Comments and processing
instructions are dropped, so text such as `https://sp<!---->.example` reads as one string.
"""

from __future__ import annotations

from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as defused
from defusedxml import DefusedXmlException
from lxml import etree

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
SAMLP = "{" + NS["samlp"] + "}"
SAML = "{" + NS["saml"] + "}"
MD = "{" + NS["md"] + "}"
DS = "{" + NS["ds"] + "}"


class UnsafeXml(Exception):
    """The document declares a DTD or entities, or names an external resource."""


class MalformedXml(Exception):
    """Not well-formed XML."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse(data: bytes) -> etree._Element:
    try:
        defused.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise UnsafeXml(type(exc).__name__) from exc
    except (ParseError, ValueError, LookupError) as exc:
        # LookupError: an encoding name Python does not know (`encoding="x-bogus"`, or a codec such as
        # rot13 that is not a text encoding).
        raise MalformedXml(str(exc)[:200]) from exc
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError, LookupError) as exc:
        raise MalformedXml(str(exc)[:200]) from exc
    if root.getroottree().docinfo.internalDTD is not None:
        raise UnsafeXml("doctype")
    return root


def text(element: etree._Element | None) -> str:
    """All the element's text, trimmed (comments were dropped at parse time)."""
    if element is None:
        return ""
    return "".join(str(part) for part in element.itertext()).strip()
