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
 * the status, with the registration time and the holder, packed into ONE slot per record (20 + 1 + 1 + 5
 * + 2 bytes). The holder is the registering gateway's member number ({IMemberRegistry-gatewayNumber}),
 * not its address: 2 bytes fit where 20 would cost a second slot (22,100 gas per record), and the number
 * comes with the gateway check every registration makes anyway. The content hash, the locator and the
 * provider are emitted in {RecordRegistered} only: the gateway and the auditor read them from the logs,
 * and storing them would triple the cost of every registration.
 */
contract RecordRegistry is IRecordRegistry {
    // one slot: patient (20) | category (1) | status (1) | registeredAt (5) | holder (2)
    struct RecordSlot {
        address patient;
        uint8 category;
        RecordStatus status;
        uint40 registeredAt;
        uint16 holder; // member number of the registering gateway; its custodian may amend and retract
    }

    IMemberRegistry private immutable _members;
    mapping(bytes32 recordId => RecordSlot) private _records;

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
    ) external {
        uint16 gateway = _gatewayNumber();
        _checkParties(patient, provider);
        _register(recordId, patient, provider, category, contentHash, locator, gateway);
    }

    /// @inheritdoc IRecordRegistry
    function registerBatch(address patient, address provider, RecordInput[] calldata records) external {
        uint16 gateway = _gatewayNumber();
        if (records.length == 0) revert RecordEmptyBatch();
        _checkParties(patient, provider);
        for (uint256 i = 0; i < records.length; ++i) {
            RecordInput calldata r = records[i];
            _register(r.recordId, patient, provider, r.category, r.contentHash, r.locator, gateway);
        }
    }

    /// @inheritdoc IRecordRegistry
    function registerUploads(UploadInput[] calldata uploads) external {
        uint16 gateway = _gatewayNumber();
        if (uploads.length == 0) revert RecordEmptyBatch();
        for (uint256 u = 0; u < uploads.length; ++u) {
            UploadInput calldata up = uploads[u];
            if (up.records.length == 0) revert RecordEmptyBatch();
            _checkParties(up.patient, up.provider);
            for (uint256 i = 0; i < up.records.length; ++i) {
                RecordInput calldata r = up.records[i];
                _register(r.recordId, up.patient, up.provider, r.category, r.contentHash, r.locator, gateway);
            }
        }
    }

    /// @inheritdoc IRecordRegistry
    function amend(
        bytes32 previousRecordId,
        bytes32 recordId,
        address provider,
        bytes32 contentHash,
        bytes calldata locator
    ) external {
        uint16 gateway = _gatewayNumber();
        RecordSlot storage previous = _records[previousRecordId];
        RecordStatus status = previous.status;
        if (status == RecordStatus.None) revert RecordUnknown(previousRecordId);
        _checkHolder(previousRecordId, previous.holder, gateway);
        if (status != RecordStatus.Active) revert RecordInvalidStatus(previousRecordId, status);
        address patient = previous.patient;
        _checkParties(patient, provider);
        previous.status = RecordStatus.Amended;
        _register(recordId, patient, provider, previous.category, contentHash, locator, gateway);
        emit RecordAmended(previousRecordId, recordId);
    }

    /// @inheritdoc IRecordRegistry
    function retract(bytes32 recordId) external {
        uint16 gateway = _gatewayNumber();
        RecordSlot storage r = _records[recordId];
        RecordStatus status = r.status;
        if (status == RecordStatus.None) revert RecordUnknown(recordId);
        _checkHolder(recordId, r.holder, gateway);
        if (status == RecordStatus.Retracted) revert RecordInvalidStatus(recordId, status);
        r.status = RecordStatus.Retracted;
        emit RecordRetracted(recordId, r.patient, msg.sender);
    }

    /// @inheritdoc IRecordRegistry
    function recordOf(bytes32 recordId) external view returns (Record memory) {
        RecordSlot storage r = _records[recordId];
        return Record(r.patient, r.category, r.status, r.registeredAt);
    }

    /// @inheritdoc IRecordRegistry
    function holderOf(bytes32 recordId) external view returns (address) {
        // an unknown record has holder number 0, which is never given out: its custodian is zero
        return _members.custodianOf(_records[recordId].holder);
    }

    /// @dev The caller's member number; reverts unless it is an active GATEWAY member.
    function _gatewayNumber() private view returns (uint16 number) {
        number = _members.gatewayNumber(msg.sender);
        if (number == 0) revert RecordNotGateway(msg.sender);
    }

    /// @dev Reverts unless the gateway of number `caller` (the sender) holds record `recordId` of holder
    /// number `holder`: it registered the record, or governance transferred that number's records to it. The
    /// first case needs no call (see the custody invariant in {MemberRegistry}).
    function _checkHolder(bytes32 recordId, uint16 holder, uint16 caller) private view {
        if (holder != caller) {
            address custodian = _members.custodianOf(holder);
            if (custodian != msg.sender) revert RecordNotHolder(recordId, msg.sender, custodian);
        }
    }

    function _checkParties(address patient, address provider) private view {
        if (patient == address(0)) revert RecordInvalidPatient();
        if (_members.activeRoles(provider) & Vocabulary.PROVIDER_ROLES == 0) revert RecordInvalidProvider(provider);
    }

    /// @dev Stores and announces one record, held by gateway number `gateway`, without access restriction.
    function _register(
        bytes32 recordId,
        address patient,
        address provider,
        uint8 category,
        bytes32 contentHash,
        bytes calldata locator,
        uint16 gateway
    ) private {
        if (category >= Vocabulary.SLOT_COUNT) revert RecordInvalidCategory(category);
        if (recordId == bytes32(0) || contentHash == bytes32(0) || locator.length == 0) {
            revert RecordInvalidInput(recordId);
        }
        RecordSlot storage slot = _records[recordId];
        if (slot.status != RecordStatus.None) revert RecordAlreadyExists(recordId);
        _records[recordId] = RecordSlot(patient, category, RecordStatus.Active, uint40(block.timestamp), gateway);
        emit RecordRegistered(recordId, patient, provider, category, contentHash, locator, msg.sender);
    }
}
