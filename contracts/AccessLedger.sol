// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (AccessLedger.sol)
pragma solidity ^0.8.24;

import {IAccessLedger} from "./interfaces/IAccessLedger.sol";
import {IConsentRegistry} from "./interfaces/IConsentRegistry.sol";
import {IMemberRegistry} from "./interfaces/IMemberRegistry.sol";
import {IRecordRegistry} from "./interfaces/IRecordRegistry.sol";
import {Vocabulary} from "./libraries/Vocabulary.sol";

/**
 * @dev The access ledger. See {IAccessLedger}.
 *
 * Storage layout (on purpose): {logAccess} and {logAccessBatch} write NO storage - the {AccessLogged}
 * event is the ledger entry, and the chain makes it tamper-evident - so a strict-mode release costs only
 * its checks and its log (and, batched, its share of one transaction). {anchorBatch} keeps ONE slot per
 * gateway (tree size, time and anchor count packed) so tree-size monotonicity is checked on-chain; the
 * roots themselves are in the {AccessBatchAnchored} events, which is where an auditor reads them (storing
 * each 32-byte root would add 20,000 gas to the first anchor).
 * The gateway is the transaction's sender and is not repeated in {AccessLogged}.
 */
contract AccessLedger is IAccessLedger {
    // one slot: treeSize (8) | anchoredAt (5) | count (8)
    struct AnchorSlot {
        uint64 treeSize;
        uint40 anchoredAt;
        uint64 count;
    }

    IMemberRegistry private immutable _members;
    IConsentRegistry private immutable _consents;
    IRecordRegistry private immutable _records;

    mapping(address gateway => AnchorSlot) private _anchors;

    modifier onlyGateway() {
        if (!_members.isActive(msg.sender, Vocabulary.ROLE_GATEWAY)) revert AccessLedgerNotGateway(msg.sender);
        _;
    }

    constructor(IMemberRegistry members, IConsentRegistry consents, IRecordRegistry records) {
        _members = members;
        _consents = consents;
        _records = records;
    }

    /// @inheritdoc IAccessLedger
    function logAccess(
        address requester,
        address patient,
        bytes32 recordId,
        uint8 purpose,
        bytes32 accessHash
    ) external onlyGateway returns (bytes32 consentId, bool emergency) {
        bytes4 refusal;
        uint8 category;
        (refusal, category, consentId, emergency) = _authorize(requester, patient, recordId, purpose);
        if (refusal != 0) _refuse(refusal, requester, patient, recordId, category, purpose);
        emit AccessLogged(requester, patient, recordId, consentId, purpose, emergency, accessHash);
    }

    /// @inheritdoc IAccessLedger
    function logAccessBatch(AccessEntry[] calldata entries) external onlyGateway returns (uint256 logged) {
        uint256 n = entries.length;
        if (n == 0) revert AccessLedgerEmptyBatch();
        for (uint256 i; i < n;) {
            AccessEntry calldata e = entries[i];
            (bytes4 refusal, , bytes32 consentId, bool emergency) = _authorize(
                e.requester,
                e.patient,
                e.recordId,
                e.purpose
            );
            if (refusal == 0) {
                emit AccessLogged(e.requester, e.patient, e.recordId, consentId, e.purpose, emergency, e.accessHash);
                unchecked {
                    ++logged;
                }
            } else {
                emit AccessRefused(i, refusal);
            }
            unchecked {
                ++i;
            }
        }
    }

    /// @inheritdoc IAccessLedger
    function anchorBatch(bytes32 root, uint64 treeSize) external onlyGateway {
        if (root == bytes32(0)) revert AccessLedgerInvalidRoot();
        AnchorSlot storage previous = _anchors[msg.sender];
        uint64 previousSize = previous.treeSize;
        if (treeSize <= previousSize) revert AccessLedgerTreeSizeNotIncreasing(treeSize, previousSize);
        uint40 anchoredAt = uint40(block.timestamp);
        uint64 index = previous.count;
        _anchors[msg.sender] = AnchorSlot(treeSize, anchoredAt, index + 1);
        emit AccessBatchAnchored(msg.sender, index, root, treeSize, anchoredAt);
    }

    /// @inheritdoc IAccessLedger
    function anchorReviews(bytes32 root, uint64 size) external onlyGateway {
        if (root == bytes32(0)) revert AccessLedgerInvalidRoot();
        emit EmergencyReviewsAnchored(msg.sender, root, size, uint40(block.timestamp));
    }

    /// @inheritdoc IAccessLedger
    function latestAnchor(address gateway) external view returns (Anchor memory) {
        AnchorSlot memory a = _anchors[gateway];
        return Anchor(a.treeSize, a.anchoredAt, a.count);
    }

    /// @dev The one check of {logAccess} and {logAccessBatch}: `refusal` is the selector of the error
    /// {logAccess} reverts with (zero if the release is authorized at this block).
    function _authorize(
        address requester,
        address patient,
        bytes32 recordId,
        uint8 purpose
    ) private view returns (bytes4 refusal, uint8 category, bytes32 consentId, bool emergency) {
        IRecordRegistry.Record memory r = _records.recordOf(recordId);
        if (r.status == IRecordRegistry.RecordStatus.None) return (AccessLedgerUnknownRecord.selector, 0, 0, false);
        if (r.patient != patient) return (AccessLedgerRecordMismatch.selector, 0, 0, false);
        if (r.status == IRecordRegistry.RecordStatus.Retracted) {
            return (AccessLedgerRecordRetracted.selector, 0, 0, false);
        }
        category = r.category;
        bool allowed;
        // check() refuses a requester that is not an active care provider, so its membership is not
        // read twice on the success path; on failure we look again only to name the right error.
        (allowed, consentId, emergency) = _consents.check(patient, requester, category, purpose);
        if (!allowed) {
            if (_members.activeRoles(requester) & Vocabulary.PROVIDER_ROLES == 0) {
                refusal = AccessLedgerInvalidRequester.selector;
            } else {
                refusal = AccessLedgerNotAuthorized.selector;
            }
        }
    }

    /// @dev Reverts with the error `refusal` names, with {logAccess}'s arguments.
    function _refuse(
        bytes4 refusal,
        address requester,
        address patient,
        bytes32 recordId,
        uint8 category,
        uint8 purpose
    ) private pure {
        if (refusal == AccessLedgerUnknownRecord.selector) revert AccessLedgerUnknownRecord(recordId);
        if (refusal == AccessLedgerRecordMismatch.selector) revert AccessLedgerRecordMismatch(recordId, patient);
        if (refusal == AccessLedgerRecordRetracted.selector) revert AccessLedgerRecordRetracted(recordId);
        if (refusal == AccessLedgerInvalidRequester.selector) revert AccessLedgerInvalidRequester(requester);
        revert AccessLedgerNotAuthorized(requester, patient, category, purpose);
    }
}
