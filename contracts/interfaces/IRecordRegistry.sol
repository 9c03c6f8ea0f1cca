// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (interfaces/IRecordRegistry.sol)
pragma solidity ^0.8.24;

/**
 * @dev The record index: which encrypted records exist, whose they are, of which category, and where
 * the ciphertext is (a locator such as a CID) with its SHA-256. Never health data: the record itself is
 * encrypted off-chain; only its hash and locator are emitted here.
 *
 * Each record is held by the gateway that registered it (it keeps the record's data key): only that
 * gateway may amend or retract it. The records of a gateway that left service (suspended or removed) pass
 * to a successor gateway only by M-of-N governance ({IMemberRegistry-Action} TransferRecords); see
 * {holderOf}.
 */
interface IRecordRegistry {
    /// @dev Lifecycle of a record. `Amended` records were superseded by a newer version and stay readable;
    /// `Retracted` records were erased (their data key destroyed off-chain) and can no longer be accessed.
    enum RecordStatus {
        None,
        Active,
        Amended,
        Retracted
    }

    /// @dev One record of a {registerBatch}.
    struct RecordInput {
        bytes32 recordId;
        uint8 category;
        bytes32 contentHash;
        bytes locator;
    }

    /// @dev One upload of a {registerUploads}: the records of one patient from one provider.
    struct UploadInput {
        address patient;
        address provider;
        RecordInput[] records;
    }

    /// @dev A record as returned by {recordOf}.
    struct Record {
        address patient;
        uint8 category;
        RecordStatus status;
        uint40 registeredAt;
    }

    /// @dev `account` is not an active GATEWAY member.
    error RecordNotGateway(address account);
    /// @dev `provider` is not an active care-providing member.
    error RecordInvalidProvider(address provider);
    /// @dev The patient address is zero.
    error RecordInvalidPatient();
    /// @dev `category` is not a category bit number of the vocabulary.
    error RecordInvalidCategory(uint8 category);
    /// @dev A record id, content hash or locator is empty.
    error RecordInvalidInput(bytes32 recordId);
    /// @dev A record `recordId` already exists.
    error RecordAlreadyExists(bytes32 recordId);
    /// @dev No record `recordId`.
    error RecordUnknown(bytes32 recordId);
    /// @dev Record `recordId` is in status `status`, which does not allow the change.
    error RecordInvalidStatus(bytes32 recordId, RecordStatus status);
    /// @dev `caller` may not amend or retract record `recordId`: it is held by the gateway `holder`.
    error RecordNotHolder(bytes32 recordId, address caller, address holder);
    /// @dev A batch must hold at least one record.
    error RecordEmptyBatch();

    /// @dev Record `recordId` of `patient` in `category` was registered by `gateway` for `provider`.
    event RecordRegistered(
        bytes32 indexed recordId,
        address indexed patient,
        address indexed provider,
        uint8 category,
        bytes32 contentHash,
        bytes locator,
        address gateway
    );
    /// @dev Record `recordId` supersedes `previousRecordId`.
    event RecordAmended(bytes32 indexed previousRecordId, bytes32 indexed recordId);
    /// @dev Record `recordId` of `patient` was retracted (erased) by `gateway`.
    event RecordRetracted(bytes32 indexed recordId, address indexed patient, address gateway);

    /**
     * @dev Registers one record.
     *
     * Requirements:
     * - the caller is an active GATEWAY member; `provider` is an active care provider;
     * - `patient` is not zero; `category` is in the vocabulary; id, hash and locator are not empty;
     * - `recordId` is new.
     *
     * Emits a {RecordRegistered} event.
     */
    function register(
        bytes32 recordId,
        address patient,
        address provider,
        uint8 category,
        bytes32 contentHash,
        bytes calldata locator
    ) external;

    /**
     * @dev Registers the records of one upload (one patient, one provider) in one transaction.
     *
     * Requirements: as for {register}, for every record; the batch is not empty.
     *
     * Emits a {RecordRegistered} event per record.
     */
    function registerBatch(address patient, address provider, RecordInput[] calldata records) external;

    /**
     * @dev Registers the records of several uploads (a gateway's group commit) in one transaction, as
     * {registerBatch} would register each upload in turn; all or nothing.
     *
     * Requirements: as for {registerBatch}, for every upload; there is at least one upload.
     *
     * Emits a {RecordRegistered} event per record, in order.
     */
    function registerUploads(UploadInput[] calldata uploads) external;

    /**
     * @dev Registers `recordId` as a new version of `previousRecordId` (same patient and category) and
     * marks the previous one `Amended`.
     *
     * Requirements: as for {register}; the caller holds `previousRecordId` (see {holderOf}), which is
     * Active. The new version is held by the caller.
     *
     * Emits a {RecordRegistered} and a {RecordAmended} event.
     */
    function amend(
        bytes32 previousRecordId,
        bytes32 recordId,
        address provider,
        bytes32 contentHash,
        bytes calldata locator
    ) external;

    /**
     * @dev Retracts (erases) `recordId`: no access to it can be ledgered any more.
     *
     * Requirements: the caller is an active GATEWAY member and holds the record (see {holderOf}); the
     * record is Active or Amended.
     *
     * Emits a {RecordRetracted} event.
     */
    function retract(bytes32 recordId) external;

    /// @dev Record `recordId` (status None if unknown).
    function recordOf(bytes32 recordId) external view returns (Record memory);

    /// @dev The gateway that may amend or retract record `recordId`: the one that registered it, or its
    /// successor by governance ({IMemberRegistry-custodianOf}); zero if the record is unknown.
    function holderOf(bytes32 recordId) external view returns (address);
}
