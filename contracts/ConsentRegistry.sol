// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (ConsentRegistry.sol)
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {IConsentRegistry} from "./interfaces/IConsentRegistry.sol";
import {IMemberRegistry} from "./interfaces/IMemberRegistry.sol";
import {Vocabulary} from "./libraries/Vocabulary.sol";

/**
 * @dev Patient consents, guardians, emergency opt-out and break-glass access. See {IConsentRegistry}.
 *
 * EIP-712 domain: name "HealthCode Ledger", version "1", this chain's id and this contract's address
 * (readable through ERC-5267 `eip712Domain()`). Typed messages:
 *
 *   ConsentGrant(address patient,address grantee,uint16 categories,uint8 purposes,uint40 validFrom,
 *                uint40 validUntil,uint64 nonce,uint256 deadline)
 *   ConsentRevoke(address patient,address grantee,uint64 nonce,uint256 deadline)
 *
 * Storage layout (on purpose): everything about one (patient, grantee) consent - categories, purposes,
 * status, validity window and two counters - is packed into ONE slot, and that slot doubles as the
 * replay protection of signed messages: its `nonce` counts grants and revokes of the pair, so a signed
 * message is usable once and only while no newer grant or revoke happened. A separate OpenZeppelin
 * {Nonces} slot would cost a second cold SSTORE (22,100 gas) on a patient's first signed grant.
 *
 * IMPORTANT: no health data and nothing identifying a person is stored or emitted: patients are
 * addresses, categories and purposes are bit masks, an emergency reason is only a hash.
 */
contract ConsentRegistry is IConsentRegistry, EIP712 {
    /// @dev Length of an emergency (break-glass) window.
    uint40 public constant EMERGENCY_WINDOW = 4 hours;

    // Private constants are UPPER_CASE without a `_` prefix, as OpenZeppelin writes them (ERC20Permit's
    // PERMIT_TYPEHASH); solhint's private-vars-leading-underscore would want one.
    // solhint-disable private-vars-leading-underscore
    bytes32 private constant CONSENT_GRANT_TYPEHASH = keccak256(
        "ConsentGrant(address patient,address grantee,uint16 categories,uint8 purposes,uint40 validFrom,uint40 validUntil,uint64 nonce,uint256 deadline)"
    );
    bytes32 private constant CONSENT_REVOKE_TYPEHASH = keccak256(
        "ConsentRevoke(address patient,address grantee,uint64 nonce,uint256 deadline)"
    );
    // solhint-enable private-vars-leading-underscore

    // one slot: categories (2) | purposes (1) | status (1) | validFrom (5) | validUntil (5) | nonce (8) | grantNonce (8),
    // from the low-order end, at these bit offsets. It is kept as one packed word, read with one SLOAD and
    // written with one SSTORE: a struct of these fields would be written field by field by the legacy code
    // generator (one SLOAD, mask and SSTORE per field), which cost `grant` 1,280 gas and `revoke` 770.
    uint256 private constant _PURPOSES_SHIFT = 16;
    uint256 private constant _STATUS_SHIFT = 24;
    uint256 private constant _VALID_FROM_SHIFT = 32;
    uint256 private constant _VALID_UNTIL_SHIFT = 72;
    uint256 private constant _NONCE_SHIFT = 112;
    uint256 private constant _GRANT_NONCE_SHIFT = 176;
    struct ConsentSlot {
        uint256 packed;
    }

    // one slot: categories (2) | validUntil (5)
    struct EmergencySlot {
        uint16 categories;
        uint40 validUntil;
    }

    // one slot: optedOut (1) | lastOptOut (5). `lastOptOut` (when the patient last opted out) ends every
    // window opened until then for good: opting back in must not revive them.
    struct OptOutSlot {
        bool optedOut;
        uint40 lastOptOut;
    }

    IMemberRegistry private immutable _members;

    mapping(address patient => mapping(address grantee => ConsentSlot)) private _consents;
    mapping(address patient => mapping(address guardian => uint40 validUntil)) private _guardians;
    mapping(address patient => OptOutSlot) private _emergencyOptOut;
    mapping(address patient => mapping(address member => EmergencySlot)) private _emergency;

    constructor(IMemberRegistry members) EIP712("HealthCode Ledger", "1") {
        _members = members;
    }

    // ---------------------------------------------------------------- patients

    /// @inheritdoc IConsentRegistry
    function grant(
        address grantee,
        uint16 categories,
        uint8 purposes,
        uint40 validFrom,
        uint40 validUntil
    ) external returns (bytes32 consentId) {
        GrantTerms memory terms = GrantTerms(msg.sender, grantee, categories, purposes, validFrom, validUntil);
        return _grant(terms, false, 0, msg.sender);
    }

    /// @inheritdoc IConsentRegistry
    function grantBySig(
        GrantTerms calldata terms,
        uint64 nonce,
        uint256 deadline,
        address signer,
        bytes calldata signature
    ) external returns (bytes32 consentId) {
        if (block.timestamp > deadline) revert ConsentExpiredSignature(deadline);
        if (_members.activeRoles(msg.sender) == 0) revert ConsentUnauthorizedSubmitter(msg.sender);
        _checkSigner(terms.patient, signer);
        bytes32 structHash = keccak256(
            abi.encode(
                CONSENT_GRANT_TYPEHASH,
                terms.patient,
                terms.grantee,
                terms.categories,
                terms.purposes,
                terms.validFrom,
                terms.validUntil,
                nonce,
                deadline
            )
        );
        _checkSignature(signer, structHash, signature);
        return _grant(terms, true, nonce, signer);
    }

    /// @inheritdoc IConsentRegistry
    function revoke(address grantee) external {
        _revoke(msg.sender, grantee, false, 0, msg.sender);
    }

    /// @inheritdoc IConsentRegistry
    function revokeBySig(
        address patient,
        address grantee,
        uint64 nonce,
        uint256 deadline,
        address signer,
        bytes calldata signature
    ) external {
        if (block.timestamp > deadline) revert ConsentExpiredSignature(deadline);
        _checkSigner(patient, signer);
        bytes32 structHash = keccak256(abi.encode(CONSENT_REVOKE_TYPEHASH, patient, grantee, nonce, deadline));
        _checkSignature(signer, structHash, signature);
        _revoke(patient, grantee, true, nonce, signer);
    }

    /// @inheritdoc IConsentRegistry
    function setGuardian(address guardian, uint40 validUntil) external {
        if (guardian == address(0) || guardian == msg.sender || validUntil <= block.timestamp) {
            revert ConsentInvalidGuardian(guardian);
        }
        _guardians[msg.sender][guardian] = validUntil;
        emit GuardianSet(msg.sender, guardian, validUntil);
    }

    /// @inheritdoc IConsentRegistry
    function removeGuardian(address guardian) external {
        if (_guardians[msg.sender][guardian] == 0) revert ConsentUnknownGuardian(msg.sender, guardian);
        delete _guardians[msg.sender][guardian];
        emit GuardianRemoved(msg.sender, guardian);
    }

    /// @inheritdoc IConsentRegistry
    function setEmergencyOptOut(bool optedOut) external {
        if (optedOut) {
            _emergencyOptOut[msg.sender] = OptOutSlot(true, uint40(block.timestamp));
        } else {
            _emergencyOptOut[msg.sender].optedOut = false;
        }
        emit EmergencyOptOutSet(msg.sender, optedOut);
    }

    // ---------------------------------------------------------------- emergency

    /// @inheritdoc IConsentRegistry
    function emergencyAccess(
        address patient,
        uint16 categories,
        bytes32 reasonHash
    ) external returns (bytes32 accessId) {
        uint16 roles = _members.activeRoles(msg.sender);
        if (roles & Vocabulary.ROLE_EMERGENCY == 0 || roles & Vocabulary.PROVIDER_ROLES == 0) {
            revert ConsentNotEmergencyMember(msg.sender);
        }
        if (categories == 0 || categories & ~Vocabulary.EMERGENCY_SAFE_CATEGORIES != 0) {
            revert ConsentEmergencyCategoryNotAllowed(categories);
        }
        if (_emergencyOptOut[patient].optedOut) revert ConsentEmergencyOptedOut(patient);
        if (reasonHash == bytes32(0)) revert ConsentEmergencyReasonRequired();
        uint40 validUntil = uint40(block.timestamp) + EMERGENCY_WINDOW;
        _emergency[patient][msg.sender] = EmergencySlot(categories, validUntil);
        accessId = _emergencyId(patient, msg.sender, validUntil);
        emit EmergencyAccessGranted(accessId, patient, msg.sender, categories, validUntil, reasonHash);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IConsentRegistry
    function check(
        address patient,
        address grantee,
        uint8 category,
        uint8 purpose
    ) external view returns (bool allowed, bytes32 consentId, bool emergency) {
        if (category >= Vocabulary.SLOT_COUNT || purpose >= Vocabulary.PURPOSE_COUNT) return (false, 0, false);
        uint16 roles = _members.activeRoles(grantee);
        if (roles & Vocabulary.PROVIDER_ROLES == 0) return (false, 0, false);

        uint256 c = _consents[patient][grantee].packed;
        if (
            uint8(c >> _STATUS_SHIFT) == uint8(ConsentStatus.Active) &&
            (uint16(c) >> category) & 1 == 1 &&
            (uint8(c >> _PURPOSES_SHIFT) >> purpose) & 1 == 1 &&
            uint40(c >> _VALID_FROM_SHIFT) <= block.timestamp &&
            block.timestamp < uint40(c >> _VALID_UNTIL_SHIFT)
        ) {
            return (true, _consentId(patient, grantee, uint64(c >> _GRANT_NONCE_SHIFT)), false);
        }

        if (purpose == Vocabulary.PURPOSE_EMERGENCY && roles & Vocabulary.ROLE_EMERGENCY != 0) {
            EmergencySlot storage e = _emergency[patient][grantee];
            OptOutSlot storage o = _emergencyOptOut[patient];
            // a window opened at `e.validUntil - EMERGENCY_WINDOW`; one opened before an opt-out stays ended
            if (
                block.timestamp < e.validUntil &&
                (e.categories >> category) & 1 == 1 &&
                !o.optedOut &&
                e.validUntil - EMERGENCY_WINDOW > o.lastOptOut
            ) {
                return (true, _emergencyId(patient, grantee, e.validUntil), true);
            }
        }
        return (false, 0, false);
    }

    /// @inheritdoc IConsentRegistry
    function consentOf(address patient, address grantee) external view returns (Consent memory) {
        uint256 c = _consents[patient][grantee].packed;
        ConsentStatus status = ConsentStatus(uint8(c >> _STATUS_SHIFT));
        bytes32 id =
            status == ConsentStatus.None ? bytes32(0) : _consentId(patient, grantee, uint64(c >> _GRANT_NONCE_SHIFT));
        return
            Consent(
                id,
                uint16(c),
                uint8(c >> _PURPOSES_SHIFT),
                status,
                uint40(c >> _VALID_FROM_SHIFT),
                uint40(c >> _VALID_UNTIL_SHIFT),
                uint64(c >> _NONCE_SHIFT)
            );
    }

    /// @inheritdoc IConsentRegistry
    function nonces(address patient, address grantee) external view returns (uint64) {
        return uint64(_consents[patient][grantee].packed >> _NONCE_SHIFT);
    }

    /// @inheritdoc IConsentRegistry
    function guardianUntil(address patient, address guardian) external view returns (uint40) {
        return _guardians[patient][guardian];
    }

    /// @inheritdoc IConsentRegistry
    function emergencyOptedOut(address patient) external view returns (bool) {
        return _emergencyOptOut[patient].optedOut;
    }

    /// @inheritdoc IConsentRegistry
    function emergencyWindow(
        address patient,
        address member
    ) external view returns (uint16 categories, uint40 validUntil) {
        EmergencySlot memory e = _emergency[patient][member];
        return (e.categories, e.validUntil);
    }

    // ---------------------------------------------------------------- internals

    /// @dev Validates `terms`, consumes the pair's nonce (which must equal `nonce` if `checkNonce`) and stores
    /// the consent, without access restriction. The slot is written whole, in one SSTORE.
    function _grant(
        GrantTerms memory terms,
        bool checkNonce,
        uint64 nonce,
        address signer
    ) private returns (bytes32 consentId) {
        if (_members.activeRoles(terms.grantee) & Vocabulary.PROVIDER_ROLES == 0) {
            revert ConsentInvalidGrantee(terms.grantee);
        }
        if (terms.categories == 0 || terms.categories & ~Vocabulary.ALL_SLOTS != 0) {
            revert ConsentInvalidCategories(terms.categories);
        }
        if (terms.purposes == 0 || terms.purposes & ~Vocabulary.ALL_PURPOSES != 0) {
            revert ConsentInvalidPurposes(terms.purposes);
        }
        if (terms.validFrom >= terms.validUntil || terms.validUntil <= block.timestamp) {
            revert ConsentInvalidWindow(terms.validFrom, terms.validUntil);
        }
        ConsentSlot storage slot = _consents[terms.patient][terms.grantee];
        uint64 current = uint64(slot.packed >> _NONCE_SHIFT);
        if (checkNonce && nonce != current) revert ConsentInvalidNonce(nonce, current);
        uint256 next;
        // a pair's nonce cannot reach 2^64: each increment is a transaction of at least 21,000 gas
        unchecked {
            next = uint256(current) + 1;
        }
        slot.packed = (uint256(terms.categories) |
            (uint256(terms.purposes) << _PURPOSES_SHIFT) |
            (uint256(uint8(ConsentStatus.Active)) << _STATUS_SHIFT) |
            (uint256(terms.validFrom) << _VALID_FROM_SHIFT) |
            (uint256(terms.validUntil) << _VALID_UNTIL_SHIFT) |
            (next << _NONCE_SHIFT) |
            (uint256(current) << _GRANT_NONCE_SHIFT));
        consentId = _consentId(terms.patient, terms.grantee, current);
        emit ConsentGranted(
            consentId,
            terms.patient,
            terms.grantee,
            terms.categories,
            terms.purposes,
            terms.validFrom,
            terms.validUntil,
            signer
        );
    }

    /// @dev Revokes the active consent of (`patient`, `grantee`) consuming the pair's nonce (which must equal
    /// `nonce` if `checkNonce`), without access restriction. The slot is read once and written once.
    function _revoke(address patient, address grantee, bool checkNonce, uint64 nonce, address signer) private {
        ConsentSlot storage slot = _consents[patient][grantee];
        uint256 word = slot.packed;
        if (uint8(word >> _STATUS_SHIFT) != uint8(ConsentStatus.Active)) revert ConsentNotActive(patient, grantee);
        uint64 current = uint64(word >> _NONCE_SHIFT);
        if (checkNonce && nonce != current) revert ConsentInvalidNonce(nonce, current);
        uint256 next;
        // a pair's nonce cannot reach 2^64: each increment is a transaction of at least 21,000 gas
        unchecked {
            next = uint256(current) + 1;
        }
        slot.packed = ((word &
            ~((uint256(type(uint8).max) << _STATUS_SHIFT) | (uint256(type(uint64).max) << _NONCE_SHIFT))) |
            (uint256(uint8(ConsentStatus.Revoked)) << _STATUS_SHIFT) |
            (next << _NONCE_SHIFT));
        emit ConsentRevoked(_consentId(patient, grantee, uint64(word >> _GRANT_NONCE_SHIFT)), patient, grantee, signer);
    }

    /// @dev Requires `signer` to be `patient` or one of its guardians whose guardianship has not expired.
    function _checkSigner(address patient, address signer) private view {
        if (signer != patient && _guardians[patient][signer] <= block.timestamp) {
            revert ConsentInvalidSigner(signer, patient);
        }
    }

    /// @dev Requires `signature` over the typed `structHash` to be valid for `signer` (EOA or ERC-1271).
    ///
    /// ECDSA is tried first and ERC-1271 only if it does not recover `signer`: a contract has no key
    /// that could produce an ECDSA signature for its own address, so the order changes no outcome, and
    /// patients (EOAs) do not pay the cold EXTCODESIZE (2,600 gas) that `isValidSignatureNow` starts with.
    ///
    /// `signature` is in memory (copied once from calldata by the caller): the calldata variants of these
    /// OpenZeppelin functions exist only from 5.5 on, whose `SignatureChecker` needs MCOPY (Cancun), and the
    /// contracts are compiled for London (solc-settings.json).
    function _checkSignature(address signer, bytes32 structHash, bytes memory signature) private view {
        bytes32 digest = _hashTypedDataV4(structHash);
        (address recovered, ECDSA.RecoverError err, ) = ECDSA.tryRecover(digest, signature);
        if (err == ECDSA.RecoverError.NoError && recovered == signer) return;
        if (!SignatureChecker.isValidERC1271SignatureNow(signer, digest, signature)) {
            revert ConsentInvalidSignature(signer);
        }
    }

    function _consentId(address patient, address grantee, uint64 grantNonce) private pure returns (bytes32) {
        return keccak256(abi.encode(patient, grantee, grantNonce));
    }

    function _emergencyId(address patient, address member, uint40 validUntil) private pure returns (bytes32) {
        return keccak256(abi.encode("emergency", patient, member, validUntil));
    }
}
