// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (interfaces/IConsentRegistry.sol)
pragma solidity ^0.8.24;

/**
 * @dev Patient consents: "this institution may read these kinds of my data, for these purposes, from
 * then until then". A patient is an Ethereum address and nothing else.
 *
 * There is at most one consent per (patient, grantee) pair: a new grant replaces the previous one, so
 * the consent a patient sees for an institution is the one in force. Grants can be made directly, or by
 * an EIP-712 `ConsentGrant` signed by the patient or one of the patient's guardians ("health code") and
 * submitted by an active member. Emergency (break-glass) access is a separate, short, narrow window.
 */
interface IConsentRegistry {
    /// @dev Lifecycle of a consent.
    enum ConsentStatus {
        None,
        Active,
        Revoked
    }

    /// @dev The terms of a grant, as signed in a `ConsentGrant` (without nonce and deadline).
    struct GrantTerms {
        address patient;
        address grantee;
        uint16 categories;
        uint8 purposes;
        uint40 validFrom;
        uint40 validUntil;
    }

    /// @dev A consent as returned by {consentOf}.
    struct Consent {
        bytes32 consentId;
        uint16 categories;
        uint8 purposes;
        ConsentStatus status;
        uint40 validFrom;
        uint40 validUntil;
        uint64 nonce;
    }

    // ---------------------------------------------------------------- errors

    /// @dev `grantee` is not an active member that may receive patient data.
    error ConsentInvalidGrantee(address grantee);
    /// @dev `categories` is zero or has bits outside the vocabulary.
    error ConsentInvalidCategories(uint16 categories);
    /// @dev `purposes` is zero or has bits outside the vocabulary.
    error ConsentInvalidPurposes(uint8 purposes);
    /// @dev The validity window is empty or already over.
    error ConsentInvalidWindow(uint40 validFrom, uint40 validUntil);
    /// @dev The signed message's deadline `deadline` has passed.
    error ConsentExpiredSignature(uint256 deadline);
    /// @dev The signature does not verify for `signer`.
    error ConsentInvalidSignature(address signer);
    /// @dev `signer` is neither `patient` nor a current guardian of `patient`.
    error ConsentInvalidSigner(address signer, address patient);
    /// @dev The message's nonce `nonce` is not the current one `expected` (replay or out of order).
    error ConsentInvalidNonce(uint64 nonce, uint64 expected);
    /// @dev The submitter `account` is not an active member.
    error ConsentUnauthorizedSubmitter(address account);
    /// @dev No active consent from `patient` to `grantee`.
    error ConsentNotActive(address patient, address grantee);
    /// @dev `guardian` is not valid for this patient (zero, the patient itself, or an expiry in the past).
    error ConsentInvalidGuardian(address guardian);
    /// @dev `guardian` is not a guardian of `patient`.
    error ConsentUnknownGuardian(address patient, address guardian);
    /// @dev `account` lacks the EMERGENCY capability.
    error ConsentNotEmergencyMember(address account);
    /// @dev `categories` includes categories an emergency access may not read.
    error ConsentEmergencyCategoryNotAllowed(uint16 categories);
    /// @dev `patient` opted out of emergency access.
    error ConsentEmergencyOptedOut(address patient);
    /// @dev An emergency access needs a non-zero reason hash.
    error ConsentEmergencyReasonRequired();

    // ---------------------------------------------------------------- events

    /// @dev `patient` (or `signer`, a guardian, for `patient`) granted `grantee` a consent.
    event ConsentGranted(
        bytes32 indexed consentId,
        address indexed patient,
        address indexed grantee,
        uint16 categories,
        uint8 purposes,
        uint40 validFrom,
        uint40 validUntil,
        address signer
    );
    /// @dev Consent `consentId` was revoked by `signer` (the patient or a guardian).
    event ConsentRevoked(bytes32 indexed consentId, address indexed patient, address indexed grantee, address signer);
    /// @dev `patient` made `guardian` a guardian until `validUntil` (0 removes).
    event GuardianSet(address indexed patient, address indexed guardian, uint40 validUntil);
    /// @dev `patient` removed `guardian`.
    event GuardianRemoved(address indexed patient, address indexed guardian);
    /// @dev `patient` opted out of (true) or back into (false) emergency access.
    event EmergencyOptOutSet(address indexed patient, bool optedOut);
    /// @dev Emergency access `accessId` opened for `member` to `categories` of `patient` until `validUntil`.
    /// The reason itself is kept off-chain; `reasonHash` commits to it.
    event EmergencyAccessGranted(
        bytes32 indexed accessId,
        address indexed patient,
        address indexed member,
        uint16 categories,
        uint40 validUntil,
        bytes32 reasonHash
    );

    // ---------------------------------------------------------------- patients

    /**
     * @dev Grants `grantee` access to `categories` for `purposes` between `validFrom` and `validUntil`;
     * the caller is the patient. Replaces any previous consent of the caller to `grantee`.
     *
     * Requirements:
     * - `grantee` is an active member with a data-recipient role;
     * - `categories` and `purposes` are non-zero and within the vocabulary;
     * - `validFrom < validUntil` and `validUntil` is in the future.
     *
     * Emits a {ConsentGranted} event.
     */
    function grant(
        address grantee,
        uint16 categories,
        uint8 purposes,
        uint40 validFrom,
        uint40 validUntil
    ) external returns (bytes32 consentId);

    /**
     * @dev Grants a consent signed (EIP-712 `ConsentGrant`) by the patient or by a current guardian
     * `signer` of the patient. `signer` may be a contract wallet (ERC-1271).
     *
     * Requirements:
     * - the caller is an active member;
     * - `deadline` has not passed and `nonce` is the pair's current nonce ({nonces});
     * - `signer` is the patient or a guardian whose guardianship has not expired;
     * - the signature is valid for `signer`; the terms are valid as for {grant}.
     *
     * Emits a {ConsentGranted} event.
     */
    function grantBySig(
        GrantTerms calldata terms,
        uint64 nonce,
        uint256 deadline,
        address signer,
        bytes calldata signature
    ) external returns (bytes32 consentId);

    /**
     * @dev Revokes the caller's consent to `grantee`, effective from this block.
     *
     * Requirements: an active consent from the caller to `grantee` exists.
     *
     * Emits a {ConsentRevoked} event.
     */
    function revoke(address grantee) external;

    /**
     * @dev Revokes a consent by an EIP-712 `ConsentRevoke` signed by the patient or a current guardian.
     * Anyone may submit it: a revocation must never be blocked by who relays it.
     *
     * Requirements: `deadline` not passed, `nonce` current, `signer` valid, signature valid, consent active.
     *
     * Emits a {ConsentRevoked} event.
     */
    function revokeBySig(
        address patient,
        address grantee,
        uint64 nonce,
        uint256 deadline,
        address signer,
        bytes calldata signature
    ) external;

    /**
     * @dev Makes `guardian` a guardian of the caller until `validUntil` (e.g. a parent for a child, a
     * relative for an elderly patient). Calling again changes the expiry.
     *
     * Requirements: `guardian` is not zero nor the caller; `validUntil` is in the future.
     *
     * Emits a {GuardianSet} event.
     */
    function setGuardian(address guardian, uint40 validUntil) external;

    /**
     * @dev Removes `guardian` as a guardian of the caller.
     *
     * Requirements: `guardian` is a guardian of the caller (expired or not).
     *
     * Emits a {GuardianRemoved} event.
     */
    function removeGuardian(address guardian) external;

    /**
     * @dev Opts the caller out of (or back into) emergency access. Opting out also ends open
     * emergency windows: {check} refuses them from this block on, and opting back in does not revive
     * them (a new {emergencyAccess} is needed).
     *
     * Emits an {EmergencyOptOutSet} event.
     */
    function setEmergencyOptOut(bool optedOut) external;

    // ---------------------------------------------------------------- emergency

    /**
     * @dev Opens a break-glass window of {EMERGENCY_WINDOW} for the caller to read `categories` of
     * `patient` for the emergency purpose. Always reported as an emergency access for review.
     *
     * Requirements:
     * - the caller is an active member with the EMERGENCY capability and a data-recipient role;
     * - `categories` is non-zero and within the emergency-safe categories (allergies, medications,
     *   conditions, immunizations);
     * - the patient has not opted out; `reasonHash` is non-zero.
     *
     * Emits an {EmergencyAccessGranted} event.
     */
    function emergencyAccess(
        address patient,
        uint16 categories,
        bytes32 reasonHash
    ) external returns (bytes32 accessId);

    // ---------------------------------------------------------------- views

    /**
     * @dev Whether `grantee` may read `category` (a bit number) of `patient` for `purpose` (a bit number)
     * at this block, the consent (or emergency access) id that allows it, and whether it is an emergency.
     * A grantee that is no longer an active data recipient is refused whatever its consents say.
     */
    function check(
        address patient,
        address grantee,
        uint8 category,
        uint8 purpose
    ) external view returns (bool allowed, bytes32 consentId, bool emergency);

    /// @dev The current (possibly revoked or expired) consent from `patient` to `grantee`.
    function consentOf(address patient, address grantee) external view returns (Consent memory);

    /// @dev The nonce the next signed grant or revoke for (`patient`, `grantee`) must carry.
    function nonces(address patient, address grantee) external view returns (uint64);

    /// @dev Until when `guardian` is a guardian of `patient` (0 = not a guardian).
    function guardianUntil(address patient, address guardian) external view returns (uint40);

    /// @dev Whether `patient` opted out of emergency access.
    function emergencyOptedOut(address patient) external view returns (bool);

    /// @dev The emergency window of `member` on `patient`: categories and end (0 = none).
    function emergencyWindow(
        address patient,
        address member
    ) external view returns (uint16 categories, uint40 validUntil);
}
