"""Data categories: which consent category governs a resource (:func:`category_of`).

The category is what the patient's consent is about, so the rules err on the protective side: a resource whose
code marks it as mental-health, sexual/reproductive or genomic data goes to that sensitive category even when
its resource type alone would suggest an ordinary one. "Its code" means any coding anywhere inside it (not
only the primary code: also ``reasonCode``, extensions, Composition sections, ...), and "inside it" includes
its ``contained`` resources and, for a document, every resource of the document at any depth: a record is
released on one consent category, so that category must cover every byte of it. A record that would hold two
sensitive categories is refused (no one consent covers both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.fhir.issues import FhirIssue, InvalidFhir
from node_client.vocabulary import CATEGORIES, Category

__all__ = ["CATEGORY_BY_TYPE", "SENSITIVE_CATEGORIES", "category_of", "sensitive_categories"]

_DIRECTORY: Final = "directory data (who/where), not patient health data"
_FINANCIAL: Final = "billing/insurance data, not patient health data"
_METADATA: Final = "provenance/audit metadata about other resources, not patient health data"
_CONSENT: Final = "consent is governed on the ledger, not stored as a record"
_PROTOCOL: Final = "a message/protocol resource, not patient health data"
_QUESTIONNAIRE: Final = (
    "the data category of a QuestionnaireResponse cannot be told without its Questionnaire"
    " (it may be a mental-health instrument); send the results as coded Observations"
)

#: Resource type → data category, or → the reason why such a resource is not a record. The one table of
#: type-level decisions; :func:`category_of` refines a few types by code (see the rules below it).
#: Types absent from the table are not records either ("no data category is defined").
CATEGORY_BY_TYPE: Final[Mapping[str, Category | str]] = MappingProxyType(
    {
        # who the patient is: a Patient is split into demographics and identifiers (gateway.fhir.patient)
        "Patient": Category.DEMOGRAPHICS,
        "RelatedPerson": Category.IDENTIFIERS,  # the patient's contacts and relatives: names, phones, addresses
        "Person": Category.IDENTIFIERS,
        "AllergyIntolerance": Category.ALLERGIES,
        "Medication": Category.MEDICATIONS,
        "MedicationRequest": Category.MEDICATIONS,
        "MedicationStatement": Category.MEDICATIONS,
        "MedicationAdministration": Category.MEDICATIONS,
        "MedicationDispense": Category.MEDICATIONS,
        "Condition": Category.CONDITIONS,  # refined by code: mental health, sexual/reproductive health
        "FamilyMemberHistory": Category.CONDITIONS,
        "AdverseEvent": Category.CONDITIONS,
        "Observation": Category.LAB_RESULTS,  # refined by category and code
        "DiagnosticReport": Category.LAB_RESULTS,  # refined by category and code
        "Specimen": Category.LAB_RESULTS,
        "ImagingStudy": Category.IMAGING,
        "Media": Category.IMAGING,  # R4 Media: clinical photos, scans, recordings
        # a DocumentReference is an encounter document (discharge summary, clinical note); Composition
        # is the head of a FHIR document
        "Encounter": Category.ENCOUNTERS,
        "EpisodeOfCare": Category.ENCOUNTERS,
        "Composition": Category.ENCOUNTERS,
        "DocumentReference": Category.ENCOUNTERS,
        "ClinicalImpression": Category.ENCOUNTERS,
        "Immunization": Category.IMMUNIZATIONS,
        "ImmunizationRecommendation": Category.IMMUNIZATIONS,
        "ImmunizationEvaluation": Category.IMMUNIZATIONS,
        # devices: wearables and their metrics produce vital-sign data
        "Device": Category.VITAL_SIGNS,
        "DeviceMetric": Category.VITAL_SIGNS,
        "Procedure": Category.PROCEDURES,
        "CarePlan": Category.CARE_PLANS,
        "Goal": Category.CARE_PLANS,
        "CareTeam": Category.CARE_PLANS,
        "ServiceRequest": Category.CARE_PLANS,
        "NutritionOrder": Category.CARE_PLANS,
        "DeviceRequest": Category.CARE_PLANS,
        "MolecularSequence": Category.GENOMICS,
        # not records
        "Organization": _DIRECTORY,
        "Practitioner": _DIRECTORY,
        "PractitionerRole": _DIRECTORY,
        "Location": _DIRECTORY,
        "HealthcareService": _DIRECTORY,
        "Endpoint": _DIRECTORY,
        "OrganizationAffiliation": _DIRECTORY,
        "Claim": _FINANCIAL,
        "ClaimResponse": _FINANCIAL,
        "ExplanationOfBenefit": _FINANCIAL,
        "Coverage": _FINANCIAL,
        "CoverageEligibilityRequest": _FINANCIAL,
        "CoverageEligibilityResponse": _FINANCIAL,
        "Account": _FINANCIAL,
        "ChargeItem": _FINANCIAL,
        "Invoice": _FINANCIAL,
        "PaymentNotice": _FINANCIAL,
        "PaymentReconciliation": _FINANCIAL,
        "Provenance": _METADATA,
        "AuditEvent": _METADATA,
        "Consent": _CONSENT,
        "MessageHeader": _PROTOCOL,
        "OperationOutcome": _PROTOCOL,
        "Parameters": _PROTOCOL,
        "QuestionnaireResponse": _QUESTIONNAIRE,
    }
)

# ---- code systems -------------------------------------------------------------------------------

_LOINC: Final = "http://loinc.org"
_SNOMED: Final = "http://snomed.info/sct"
_RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
_OBSERVATION_CATEGORY: Final = frozenset(
    {"http://terminology.hl7.org/CodeSystem/observation-category", "http://hl7.org/fhir/observation-category"}
)
_V2_0074: Final = frozenset({"http://terminology.hl7.org/CodeSystem/v2-0074", "http://hl7.org/fhir/v2/0074"})
_ICD10_OIDS: Final = frozenset({"urn:oid:2.16.840.1.113883.6.3", "urn:oid:2.16.840.1.113883.6.90"})


def _is_icd10(system: str) -> bool:
    """WHO ICD-10 and its national modifications (icd-10-cm, -de, -nl, ...); add local URIs here."""
    return system.startswith("http://hl7.org/fhir/sid/icd-10") or system in _ICD10_OIDS


# ---- the code-based rules ------------------------------------------------------------------------
# Sensitive categories win over the type's category: a contraceptive prescription is sexual/reproductive
# health data before it is a medication. The code sets are small and explicit (no terminology server, so
# no SNOMED subsumption): extend them, do not replace them with text matching ("respiratory depression" is
# not a mental-health finding). The rules look at every coding anywhere in a resource, its contained
# resources and a document's resources (see sensitive_categories), not only the primary code: an
# Encounter whose reasonCode is a depression is mental-health data too.

_MENTAL_HEALTH_CODES: Final = frozenset(
    {
        # SNOMED CT: mental disorders and substance use disorders seen in practice and in Synthea
        (_SNOMED, "74732009"),  # Mental disorder
        (_SNOMED, "35489007"),  # Depressive disorder
        (_SNOMED, "370143000"),  # Major depressive disorder
        (_SNOMED, "36923009"),  # Major depression, single episode
        (_SNOMED, "197480006"),  # Anxiety disorder
        (_SNOMED, "48694002"),  # Anxiety
        (_SNOMED, "80583007"),  # Severe anxiety (panic)
        (_SNOMED, "47505003"),  # Posttraumatic stress disorder
        (_SNOMED, "58214004"),  # Schizophrenia
        (_SNOMED, "69322001"),  # Psychotic disorder
        (_SNOMED, "13746004"),  # Bipolar disorder
        (_SNOMED, "406506008"),  # Attention deficit hyperactivity disorder
        (_SNOMED, "192127007"),  # Child attention deficit disorder
        (_SNOMED, "225444004"),  # At risk for suicide
        (_SNOMED, "7200002"),  # Alcoholism
        (_SNOMED, "66590003"),  # Alcohol dependence
        (_SNOMED, "26416006"),  # Drug abuse
        (_SNOMED, "6525002"),  # Dependent drug abuse
        (_SNOMED, "5602001"),  # Opioid abuse
        # LOINC: mental-health and substance-use screening instruments (panels and total scores)
        (_LOINC, "44249-1"),  # PHQ-9 panel
        (_LOINC, "44261-6"),  # PHQ-9 total score
        (_LOINC, "89204-2"),  # PHQ-9 modified for teens, total score
        (_LOINC, "55757-9"),  # PHQ-2 panel
        (_LOINC, "55758-7"),  # PHQ-2 total score
        (_LOINC, "69737-5"),  # GAD-7 panel
        (_LOINC, "70274-6"),  # GAD-7 total score
        (_LOINC, "82667-7"),  # DAST-10 total score
        (_LOINC, "72109-2"),  # AUDIT-C panel
        (_LOINC, "75626-2"),  # AUDIT-C total score
    }
)

_SEXUAL_REPRODUCTIVE_CODES: Final = frozenset(
    {
        # SNOMED CT: pregnancy, contraception, sterilization, sexually transmitted infections
        (_SNOMED, "72892002"),  # Normal pregnancy
        (_SNOMED, "77386006"),  # Pregnant
        (_SNOMED, "47200007"),  # High risk pregnancy
        (_SNOMED, "19169002"),  # Miscarriage in first trimester
        (_SNOMED, "79586000"),  # Tubal pregnancy
        (_SNOMED, "398254007"),  # Pre-eclampsia
        (_SNOMED, "198992004"),  # Eclampsia in pregnancy
        (_SNOMED, "11687002"),  # Gestational diabetes mellitus
        (_SNOMED, "183996000"),  # Sterilization requested
        (_SNOMED, "267020005"),  # History of tubal ligation
        (_SNOMED, "287664005"),  # Ligation of bilateral fallopian tubes
        (_SNOMED, "22523008"),  # Vasectomy
        (_SNOMED, "268533009"),  # Sterilization education
        (_SNOMED, "65200003"),  # Insertion of intrauterine contraceptive device
        (_SNOMED, "169553002"),  # Insertion of subcutaneous contraceptive
        (_SNOMED, "15628003"),  # Gonorrhea
        (_SNOMED, "76272004"),  # Syphilis
        (_SNOMED, "33839006"),  # Genital herpes simplex
        (_SNOMED, "8098009"),  # Sexually transmitted infectious disease
        # LOINC: pregnancy status and tests, sexual orientation
        (_LOINC, "82810-3"),  # Pregnancy status
        (_LOINC, "11449-6"),  # Pregnancy status - Reported
        (_LOINC, "2106-3"),  # Choriogonadotropin (pregnancy test) [Presence] in Urine
        (_LOINC, "2118-8"),  # Choriogonadotropin (pregnancy test) [Presence] in Serum or Plasma
        (_LOINC, "19080-1"),  # Choriogonadotropin [Units/volume] in Serum or Plasma
        (_LOINC, "76690-7"),  # Sexual orientation
        # RxNorm: hormonal contraceptives (the set Synthea's contraceptive modules prescribe)
        (_RXNORM, "748962"),  # Camila 28 Day Pack
        (_RXNORM, "831533"),  # Errin 28 Day Pack
        (_RXNORM, "757594"),  # Jolivette 28 Day Pack
        (_RXNORM, "235389"),  # Mestranol / Norethynodrel
        (_RXNORM, "749882"),  # Norinyl 1+50 28 Day Pack
        (_RXNORM, "1359133"),  # Estrostep Fe 28 Day Pack
        (_RXNORM, "749785"),  # Ortho Tri-Cyclen 28 Day Pack
        (_RXNORM, "751905"),  # Trinessa 28 Day Pack
        (_RXNORM, "749762"),  # Seasonique 91 Day Pack
        (_RXNORM, "748856"),  # Yaz 28 Day Pack
        (_RXNORM, "978950"),  # Natazia 28 Day Pack
        (_RXNORM, "748879"),  # Levora 0.15/30 28 Day Pack
        (_RXNORM, "1366343"),  # Levonorgestrel 0.00354 MG/HR Drug Implant
        (_RXNORM, "389221"),  # Etonogestrel 68 MG Drug Implant
        (_RXNORM, "807283"),  # Mirena 52 MG Intrauterine System
        (_RXNORM, "1605257"),  # Liletta 52 MG Intrauterine System
        (_RXNORM, "1856546"),  # Kyleena 19.5 MG Intrauterine System
        (_RXNORM, "1000126"),  # medroxyprogesterone acetate 150 MG/ML Injection (Depo-Provera)
        (_RXNORM, "1534809"),  # ethinyl estradiol / norelgestromin transdermal system
        (_RXNORM, "1367439"),  # NuvaRing
    }
)

_GENOMICS_CODES: Final = frozenset(
    {
        (_LOINC, "51969-4"),  # Genetic analysis report
        (_LOINC, "55233-1"),  # Genetic analysis master panel
        (_LOINC, "81247-9"),  # Master HL7 genetic variant reporting panel
        (_LOINC, "69548-6"),  # Genetic variant assessment
        (_LOINC, "48018-6"),  # Gene studied [ID]
        (_LOINC, "81252-9"),  # Discrete genetic variant
    }
)


def _icd10_category(code: str) -> Category | None:
    """ICD-10 chapters: F = mental and behavioural disorders; O = pregnancy, childbirth and the
    puerperium, Z30-Z39 = reproduction (contraception, pregnancy supervision, delivery), A50-A64 =
    infections with a predominantly sexual mode of transmission, N96-N98 = infertility and its treatment."""
    code = code.strip().upper()
    if not code:
        return None
    letter, digits = code[0], code[1:3]
    if letter == "F":
        return Category.MENTAL_HEALTH
    if letter == "O":
        return Category.SEXUAL_REPRODUCTIVE_HEALTH
    if not digits.isdigit():
        return None
    number = int(digits)
    if (
        (letter == "Z" and 30 <= number <= 39)
        or (letter == "A" and 50 <= number <= 64)
        or (letter == "N" and 96 <= number <= 98)
    ):
        return Category.SEXUAL_REPRODUCTIVE_HEALTH
    return None


#: The sensitive categories of the vocabulary (genomics, mental health, sexual/reproductive health, identifiers).
SENSITIVE_CATEGORIES: Final = frozenset(Category(t.bit) for t in CATEGORIES if t.sensitive)


def _coding_category(system: str, code: str) -> Category | None:
    """The sensitive category a single coding names, if any."""
    key = (system, code)
    if key in _MENTAL_HEALTH_CODES:
        return Category.MENTAL_HEALTH
    if key in _SEXUAL_REPRODUCTIVE_CODES:
        return Category.SEXUAL_REPRODUCTIVE_HEALTH
    if key in _GENOMICS_CODES:
        return Category.GENOMICS
    if _is_icd10(system):
        return _icd10_category(code)
    return None


def sensitive_categories(resource: Mapping[str, Any]) -> frozenset[Category]:
    """Every sensitive category that ``resource`` holds data of, wherever it sits.

    One walk over the whole JSON tree (iterative: the body is hostile), so nothing nested escapes: every
    coding anywhere (primary code, ``reasonCode``, ``valueCodeableConcept``, components, extensions,
    Composition sections, ...) is looked up in the code rules, and every resource met on the way (the
    resource itself, its ``contained`` resources, a document's entries and Bundles nested in it at any
    depth) counts with its type-level category (:func:`_base_category`) when that is sensitive, e.g. a
    contained MolecularSequence or a genetics (``GE``) DiagnosticReport inside a document. Narrative
    (``text.div``, section text) is free text and is not classified; it travels with the codes it restates.
    """
    found: set[Category] = set()
    stack: list[object] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("resourceType"), str):
                base = _base_category(node)
                if base in SENSITIVE_CATEGORIES:
                    found.add(base)
            system, code = node.get("system"), node.get("code")
            if isinstance(system, str) and isinstance(code, str) and (category := _coding_category(system, code)):
                found.add(category)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return frozenset(found)


# ---- Observation and DiagnosticReport -----------------------------------------------------------

#: observation-category code → category, in precedence order (first present wins). ``survey``,
#: ``social-history`` and ``exam`` are things recorded at an encounter (smoking status, questionnaires,
#: examination findings), so ENCOUNTERS; survey instruments that screen mental health are caught by the
#: code rules first. ``activity`` is wearable territory (steps, sleep), so VITAL_SIGNS.
_OBSERVATION_CATEGORIES: Final[Mapping[str, Category]] = MappingProxyType(
    {
        "laboratory": Category.LAB_RESULTS,
        "imaging": Category.IMAGING,
        "vital-signs": Category.VITAL_SIGNS,
        "activity": Category.VITAL_SIGNS,
        "procedure": Category.PROCEDURES,
        "therapy": Category.PROCEDURES,
        "exam": Category.ENCOUNTERS,
        "survey": Category.ENCOUNTERS,
        "social-history": Category.ENCOUNTERS,
    }
)

#: LOINC codes of the FHIR R4 vital-signs profiles: an uncategorized Observation with one of these is a
#: vital sign.
_VITAL_SIGN_LOINC: Final = frozenset(
    {
        "85353-1",
        "9279-1",
        "8867-4",
        "2708-6",
        "59408-5",
        "8310-5",
        "8302-2",
        "8306-3",
        "9843-4",
        "29463-7",
        "39156-5",
        "85354-9",
        "8480-6",
        "8462-4",
        "8478-0",
    }
)

_DIAGNOSTIC_SERVICE_IMAGING: Final = frozenset({"RAD", "CT", "NMR", "NMS", "RUS", "VUS", "XRC", "RX", "OUS", "CUS"})
_LOINC_RADIOLOGY: Final = "LP29684-5"
_LOINC_PATHOLOGY: Final = "LP7839-6"
#: LOINC document types used as DiagnosticReport.category for clinical notes (US Core): a note about an
#: encounter, not a lab report.
_CLINICAL_NOTE_LOINC: Final = frozenset(
    {
        "11488-4",  # Consult note
        "18842-5",  # Discharge summary
        "28655-9",  # Physician attending discharge summary
        "11506-3",  # Progress note
        "34117-2",  # History and physical note
        "51847-2",  # Evaluation and plan note
        "34111-5",  # Emergency department note
        "28570-0",  # Procedure note
        "57133-1",  # Referral note
        "18761-7",  # Transfer summary note
        "34133-9",  # Summary of episode note
    }
)


def _codings(concept: object) -> list[Mapping[str, Any]]:
    """The codings of a CodeableConcept, a list of them, or a bare Coding."""
    if isinstance(concept, list):
        return [c for item in concept for c in _codings(item)]
    if not isinstance(concept, dict):
        return []
    coding = concept.get("coding")
    if isinstance(coding, list):
        return [c for c in coding if isinstance(c, dict)]
    if "code" in concept or "system" in concept:
        return [concept]
    return []


def _observation_category(resource: Mapping[str, Any]) -> Category:
    """By ``Observation.category``; uncategorized: a vital-sign LOINC code or a device (wearable) means
    VITAL_SIGNS, anything else LAB_RESULTS (most uncategorized observations are lab results)."""
    codes = {
        c.get("code")
        for c in _codings(resource.get("category"))
        if c.get("system") in _OBSERVATION_CATEGORY or c.get("system") is None
    }
    for code, category in _OBSERVATION_CATEGORIES.items():
        if code in codes:
            return category
    if any(c.get("system") == _LOINC and c.get("code") in _VITAL_SIGN_LOINC for c in _codings(resource.get("code"))):
        return Category.VITAL_SIGNS
    if resource.get("device"):
        return Category.VITAL_SIGNS
    return Category.LAB_RESULTS


def _diagnostic_report_category(resource: Mapping[str, Any]) -> Category:
    """By ``DiagnosticReport.category``: v2-0074 ``GE`` = genetics, radiology sections = imaging, LOINC
    radiology part = imaging, LOINC clinical-note types = encounter notes; otherwise (LAB, HM, CH, MB,
    pathology, ...) laboratory. Precedence genomics > imaging > notes > laboratory. A report that links
    imaging studies but has no telling category is imaging."""
    found: set[Category] = set()
    for coding in _codings(resource.get("category")):
        system, code = coding.get("system"), coding.get("code")
        if system in _V2_0074:
            if code == "GE":
                found.add(Category.GENOMICS)
            elif code in _DIAGNOSTIC_SERVICE_IMAGING:
                found.add(Category.IMAGING)
            else:
                found.add(Category.LAB_RESULTS)
        elif system == _LOINC:
            if code == _LOINC_RADIOLOGY:
                found.add(Category.IMAGING)
            elif code in _CLINICAL_NOTE_LOINC:
                found.add(Category.ENCOUNTERS)
            elif code == _LOINC_PATHOLOGY:
                found.add(Category.LAB_RESULTS)
    for category in (Category.GENOMICS, Category.IMAGING, Category.ENCOUNTERS, Category.LAB_RESULTS):
        if category in found:
            return category
    if resource.get("imagingStudy"):
        return Category.IMAGING
    return Category.LAB_RESULTS


_REFINE: Final[Mapping[str, Callable[[Mapping[str, Any]], Category]]] = MappingProxyType(
    {"Observation": _observation_category, "DiagnosticReport": _diagnostic_report_category}
)

_MEDICATION_TYPES: Final = frozenset(
    {"MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"}
)


def _base_category(resource: Mapping[str, Any]) -> Category | None:
    """The category by type alone (:data:`CATEGORY_BY_TYPE`) and the category-based refinements of
    Observation and DiagnosticReport; a document Bundle is ENCOUNTERS, any other Bundle None."""
    rt = resource.get("resourceType")
    if rt == "Bundle":
        return Category.ENCOUNTERS if resource.get("type") == "document" else None
    if not isinstance(rt, str):
        return None
    base = CATEGORY_BY_TYPE.get(rt)
    if not isinstance(base, Category):
        return None
    refine = _REFINE.get(rt)
    return refine(resource) if refine is not None else base


def category_of(resource: Mapping[str, Any]) -> Category | None:
    """The data category that governs ``resource``, or None if it is not a record (see :func:`ignore_reason`).

    Type and refinements first (:func:`_base_category`); then, winning over them, the one sensitive
    category the resource holds data of anywhere inside it (:func:`sensitive_categories`: any coding,
    contained resources, a document's resources at any depth). A document Bundle is otherwise an
    encounter document (ENCOUNTERS); any other Bundle is a container, not a record (:func:`group`
    flattens it).

    Raises :class:`InvalidFhir` (at the resource type) if the resource holds data of two or more sensitive
    categories: its record could only be released on one category's consent, which would release the
    other's data without consent, so it is refused rather than filed under either.
    """
    base = _base_category(resource)
    if base is None:
        return None
    held = sensitive_categories(resource)
    if len(held) > 1:
        names = " and ".join(CATEGORIES[c].slug for c in sorted(held))
        raise InvalidFhir(
            [
                FhirIssue(
                    str(resource.get("resourceType")),
                    f"holds {names} data: a record is released on the consent for one category, and no one category"
                    " covers them together; upload the data of each sensitive category separately",
                )
            ]
        )
    return next(iter(held), base)
