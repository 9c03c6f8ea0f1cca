// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (RecordRegistry.sol)
pragma solidity ^0.8.24;

import {IMemberRegistry} from "./interfaces/IMemberRegistry.sol";
import {IRecordRegistry} from "./interfaces/IRecordRegistry.sol";
import {Vocabulary} from "./libraries/Vocabulary.sol";

/**
 * @dev The record index. See {IRecordRegistry}.
 *
 * Storage layout (on purpose): only what on-chain checks need is stored - the patient, the category and
 * the status, with the registration time, packed into ONE slot per record (20 + 1 + 1 + 5 bytes). The
 * content hash, the locator and the provider are emitted in {RecordRegistered} only: the gateway and the
 * auditor read them from the logs, and storing them would triple the cost of every registration.
 */
contract RecordRegistry is IRecordRegistry {
    // one slot: patient (20) | category (1) | status (1) | registeredAt (5)
    struct RecordSlot {
        address patient;
        uint8 category;
        RecordStatus status;
        uint40 registeredAt;
    }

    IMemberRegistry private immutable _members;
    mapping(bytes32 recordId => RecordSlot) private _records;

    modifier onlyGateway() {
        if (!_members.isActive(msg.sender, Vocabulary.ROLE_GATEWAY)) revert RecordNotGateway(msg.sender);
        _;
    }

    constructor(IMemberRegistry members) {
        _members = members;
    }

    /// @inheritdoc IRecordRegistry
    function register(
        bytes32 recordId,
        address patient,
        address provider,
        uint8 category,
        bytes32 contentHash,
        bytes calldata locator
    ) external onlyGateway {
        _checkParties(patient, provider);
        _register(recordId, patient, provider, category, contentHash, locator);
    }

    /// @inheritdoc IRecordRegistry
    function registerBatch(address patient, address provider, RecordInput[] calldata records) external onlyGateway {
        if (records.length == 0) revert RecordEmptyBatch();
        _checkParties(patient, provider);
        for (uint256 i = 0; i < records.length; ++i) {
            RecordInput calldata r = records[i];
            _register(r.recordId, patient, provider, r.category, r.contentHash, r.locator);
        }
    }

    /// @inheritdoc IRecordRegistry
    function amend(
        bytes32 previousRecordId,
        bytes32 recordId,
        address provider,
        bytes32 contentHash,
        bytes calldata locator
    ) external onlyGateway {
        RecordSlot storage previous = _records[previousRecordId];
        if (previous.status != RecordStatus.Active) {
            if (previous.status == RecordStatus.None) revert RecordUnknown(previousRecordId);
            revert RecordInvalidStatus(previousRecordId, previous.status);
        }
        address patient = previous.patient;
        _checkParties(patient, provider);
        previous.status = RecordStatus.Amended;
        _register(recordId, patient, provider, previous.category, contentHash, locator);
        emit RecordAmended(previousRecordId, recordId);
    }

    /// @inheritdoc IRecordRegistry
    function retract(bytes32 recordId) external onlyGateway {
        RecordSlot storage r = _records[recordId];
        RecordStatus status = r.status;
        if (status == RecordStatus.None) revert RecordUnknown(recordId);
        if (status == RecordStatus.Retracted) revert RecordInvalidStatus(recordId, status);
        r.status = RecordStatus.Retracted;
        emit RecordRetracted(recordId, r.patient, msg.sender);
    }

    /// @inheritdoc IRecordRegistry
    function recordOf(bytes32 recordId) external view returns (Record memory) {
        RecordSlot memory r = _records[recordId];
        return Record(r.patient, r.category, r.status, r.registeredAt);
    }

    function _checkParties(address patient, address provider) private view {
        if (patient == address(0)) revert RecordInvalidPatient();
        if (_members.activeRoles(provider) & Vocabulary.PROVIDER_ROLES == 0) revert RecordInvalidProvider(provider);
    }

    /// @dev Stores and announces one record, without access restriction.
    function _register(
        bytes32 recordId,
        address patient,
        address provider,
        uint8 category,
        bytes32 contentHash,
        bytes calldata locator
    ) private {
        if (category >= Vocabulary.CATEGORY_COUNT) revert RecordInvalidCategory(category);
        if (recordId == bytes32(0) || contentHash == bytes32(0) || locator.length == 0) {
            revert RecordInvalidInput(recordId);
        }
        RecordSlot storage slot = _records[recordId];
        if (slot.status != RecordStatus.None) revert RecordAlreadyExists(recordId);
        _records[recordId] = RecordSlot(patient, category, RecordStatus.Active, uint40(block.timestamp));
        emit RecordRegistered(recordId, patient, provider, category, contentHash, locator, msg.sender);
    }
}
