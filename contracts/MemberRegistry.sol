// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (MemberRegistry.sol)
pragma solidity ^0.8.24;

import {IMemberRegistry} from "./interfaces/IMemberRegistry.sol";
import {Vocabulary} from "./libraries/Vocabulary.sol";

/**
 * @dev Consortium permissioning with M-of-N governance among admins.
 *
 * Every change of membership (add, suspend, reinstate, remove, change roles, rotate encryption key) and
 * of governance itself (add/remove admin, change threshold) goes through propose → approve → execute.
 * Once the threshold is above 1, no single key can onboard or suspend an institution.
 *
 * Proposals carry the admin epoch they were made under: any change of the rules themselves - the admin
 * set or the threshold - bumps the epoch and makes every pending proposal stale, so approvals of a removed
 * admin never count and a lowered threshold cannot suddenly make old, under-approved proposals executable.
 * Proposals expire after {PROPOSAL_TTL}.
 *
 * Storage layout (on purpose): a member's hot data (status, roles, since, number) fits one slot so that
 * the membership checks other contracts make on every access cost one SLOAD - {gatewayNumber} answers
 * RecordRegistry's gateway check and the record holder from that same slot; the encryption key and the
 * metadata hash sit in their own slots and are only read by off-chain clients. A proposal's action data
 * is packed into one slot (target, arg, action, approvals, status, expiry, epoch).
 *
 * Record custody: `_custodians[n]` is who may retract and amend the records registered under member number
 * n (written once when n is given out, and by TransferRecords). Invariant: an Active member's number is
 * one it is the custodian of - TransferRecords only takes a number from a Suspended or Removed custodian,
 * and a member coming back (reinstated, added again) whose number was taken gets a new one. So comparing a
 * record's holder number with the caller's number, without reading `_custodians`, is enough for the usual
 * case (the registering gateway itself).
 *
 * IMPORTANT: nothing here identifies a person: members are institutions, and their names live off-chain
 * behind `metadataHash`.
 */
contract MemberRegistry is IMemberRegistry {
    /// @dev How long a proposal may wait for approvals and execution.
    uint40 public constant PROPOSAL_TTL = 7 days;

    // slot: status (1) | roles (2) | since (5) | number (2)
    struct MemberSlot {
        MemberStatus status;
        uint16 roles;
        uint40 since;
        uint16 number;
    }

    // slot 0: target (20) | arg (2) | action (1) | approvals (1) | status (1) | expiresAt (5) | adminEpoch (2)
    struct ProposalSlot {
        address target;
        uint16 arg;
        Action action;
        uint8 approvals;
        ProposalStatus status;
        uint40 expiresAt;
        uint16 adminEpoch;
        address proposer;
        bytes32 encryptionKey;
        bytes32 metadataHash;
    }

    // slot: adminCount (1) | threshold (1) | adminEpoch (2) | proposalCount (8; uint64 is plenty) | numbers (2)
    struct GovernanceSlot {
        uint8 adminCount;
        uint8 threshold;
        uint16 adminEpoch;
        uint64 proposalCount;
        uint16 numbers; // member numbers given out so far: 1..numbers
    }

    mapping(address member => MemberSlot) private _members;
    mapping(address member => bytes32) private _encryptionKeys;
    mapping(address member => bytes32) private _metadataHashes;
    mapping(address account => bool) private _admins;
    mapping(uint256 proposalId => ProposalSlot) private _proposals;
    mapping(uint256 proposalId => mapping(address admin => bool)) private _approved;
    mapping(uint16 number => address custodian) private _custodians;
    GovernanceSlot private _gov;

    modifier onlyAdmin() {
        if (!_admins[msg.sender]) revert MemberRegistryNotAdmin(msg.sender);
        _;
    }

    /**
     * @dev Sets the initial admins and threshold.
     *
     * Requirements: at least one admin, no zero or duplicate admin, 1 <= threshold <= admins.
     */
    constructor(address[] memory initialAdmins, uint8 initialThreshold) {
        if (initialAdmins.length == 0 || initialAdmins.length > type(uint8).max) {
            revert MemberRegistryInvalidThreshold(initialThreshold, initialAdmins.length);
        }
        for (uint256 i = 0; i < initialAdmins.length; ++i) {
            _addAdmin(initialAdmins[i]);
        }
        _setThreshold(initialThreshold);
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IMemberRegistry
    function propose(
        Action action,
        address target,
        uint16 arg,
        bytes32 encryptionKey,
        bytes32 metadataHash
    ) external onlyAdmin returns (uint256 proposalId) {
        _validate(action, target, arg, encryptionKey);
        GovernanceSlot memory gov = _gov;
        unchecked {
            // a uint64 proposal counter cannot overflow in practice
            proposalId = ++_gov.proposalCount;
        }
        uint40 expiresAt = uint40(block.timestamp) + PROPOSAL_TTL;
        _proposals[proposalId] = ProposalSlot({
            target: target,
            arg: arg,
            action: action,
            approvals: 1,
            status: ProposalStatus.Pending,
            expiresAt: expiresAt,
            adminEpoch: gov.adminEpoch,
            proposer: msg.sender,
            encryptionKey: encryptionKey,
            metadataHash: metadataHash
        });
        _approved[proposalId][msg.sender] = true;
        emit ProposalCreated(proposalId, msg.sender, action, target, arg, encryptionKey, metadataHash, expiresAt);
        emit ProposalApproved(proposalId, msg.sender, 1);
    }

    /// @inheritdoc IMemberRegistry
    function approve(uint256 proposalId) external onlyAdmin {
        ProposalSlot storage p = _pendingProposal(proposalId);
        if (_approved[proposalId][msg.sender]) revert MemberRegistryAlreadyApproved(proposalId, msg.sender);
        _approved[proposalId][msg.sender] = true;
        uint8 approvals = p.approvals + 1;
        p.approvals = approvals;
        emit ProposalApproved(proposalId, msg.sender, approvals);
    }

    /// @inheritdoc IMemberRegistry
    function execute(uint256 proposalId) external onlyAdmin {
        ProposalSlot storage p = _pendingProposal(proposalId);
        uint8 threshold = _gov.threshold;
        if (p.approvals < threshold) revert MemberRegistryNotEnoughApprovals(proposalId, p.approvals, threshold);
        // effects: mark executed before applying, so a re-entrant or repeated call sees it done
        p.status = ProposalStatus.Executed;
        emit ProposalExecuted(proposalId, msg.sender);
        _apply(p.action, p.target, p.arg, p.encryptionKey, p.metadataHash);
    }

    /// @inheritdoc IMemberRegistry
    function cancel(uint256 proposalId) external onlyAdmin {
        ProposalSlot storage p = _proposals[proposalId];
        if (p.status == ProposalStatus.None) revert MemberRegistryUnknownProposal(proposalId);
        if (p.status != ProposalStatus.Pending) revert MemberRegistryProposalNotPending(proposalId, p.status);
        bool expired = block.timestamp >= p.expiresAt;
        if (!expired && p.proposer != msg.sender) revert MemberRegistryNotProposer(proposalId, msg.sender);
        p.status = ProposalStatus.Cancelled;
        emit ProposalCancelled(proposalId, msg.sender);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IMemberRegistry
    function isActive(address member, uint16 roles) external view returns (bool) {
        MemberSlot storage m = _members[member];
        return m.status == MemberStatus.Active && (m.roles & roles) != 0;
    }

    /// @inheritdoc IMemberRegistry
    function activeRoles(address member) external view returns (uint16) {
        MemberSlot storage m = _members[member];
        return m.status == MemberStatus.Active ? m.roles : 0;
    }

    /// @inheritdoc IMemberRegistry
    function gatewayNumber(address account) external view returns (uint16) {
        MemberSlot storage m = _members[account];
        if (m.status != MemberStatus.Active) return 0;
        return m.roles & Vocabulary.ROLE_GATEWAY != 0 ? m.number : 0;
    }

    /// @inheritdoc IMemberRegistry
    function numberOf(address member) external view returns (uint16) {
        return _members[member].number;
    }

    /// @inheritdoc IMemberRegistry
    function custodianOf(uint16 number) external view returns (address) {
        return _custodians[number];
    }

    /// @inheritdoc IMemberRegistry
    function memberOf(address member) external view returns (Member memory) {
        MemberSlot memory m = _members[member];
        return Member(m.status, m.roles, m.since, _encryptionKeys[member], _metadataHashes[member]);
    }

    /// @inheritdoc IMemberRegistry
    function isAdmin(address account) external view returns (bool) {
        return _admins[account];
    }

    /// @inheritdoc IMemberRegistry
    function governance() external view returns (uint8 adminCount, uint8 threshold, uint16 adminEpoch) {
        GovernanceSlot memory gov = _gov;
        return (gov.adminCount, gov.threshold, gov.adminEpoch);
    }

    /// @inheritdoc IMemberRegistry
    function proposalOf(uint256 proposalId) external view returns (Proposal memory) {
        ProposalSlot memory p = _proposals[proposalId];
        return
            Proposal(
                p.target,
                p.arg,
                p.action,
                p.approvals,
                p.status,
                p.expiresAt,
                p.adminEpoch,
                p.proposer,
                p.encryptionKey,
                p.metadataHash
            );
    }

    /// @inheritdoc IMemberRegistry
    function hasApproved(uint256 proposalId, address admin) external view returns (bool) {
        return _approved[proposalId][admin];
    }

    /// @inheritdoc IMemberRegistry
    function proposalCount() external view returns (uint256) {
        return _gov.proposalCount;
    }

    // ---------------------------------------------------------------- internals

    /// @dev The pending, unexpired, current-epoch proposal `proposalId`, or a revert saying why not.
    function _pendingProposal(uint256 proposalId) private view returns (ProposalSlot storage p) {
        p = _proposals[proposalId];
        ProposalStatus status = p.status;
        if (status == ProposalStatus.None) revert MemberRegistryUnknownProposal(proposalId);
        if (status != ProposalStatus.Pending) revert MemberRegistryProposalNotPending(proposalId, status);
        if (block.timestamp >= p.expiresAt) revert MemberRegistryProposalExpired(proposalId, p.expiresAt);
        if (p.adminEpoch != _gov.adminEpoch) revert MemberRegistryProposalStale(proposalId);
    }

    /// @dev Static validation of a proposal's arguments (state is checked again when it executes).
    function _validate(Action action, address target, uint16 arg, bytes32 encryptionKey) private view {
        if (action == Action.ChangeThreshold) {
            if (arg == 0 || arg > type(uint8).max) revert MemberRegistryInvalidThreshold(arg, _gov.adminCount);
            return;
        }
        if (target == address(0)) revert MemberRegistryZeroAddress();
        if (action == Action.TransferRecords && (arg == 0 || arg > _gov.numbers)) {
            revert MemberRegistryUnknownNumber(arg);
        }
        if (action == Action.AddMember || action == Action.ChangeRoles) _checkRoles(arg);
        if ((action == Action.AddMember || action == Action.RotateEncryptionKey) && encryptionKey == bytes32(0)) {
            revert MemberRegistryInvalidEncryptionKey();
        }
    }

    function _checkRoles(uint16 roles) private pure {
        if (roles == 0 || roles & ~Vocabulary.ALL_ROLES != 0) revert MemberRegistryInvalidRoles(roles);
    }

    /// @dev Applies an approved action, without access restriction.
    function _apply(Action action, address target, uint16 arg, bytes32 encryptionKey, bytes32 metadataHash) private {
        if (action == Action.AddMember) {
            _addMember(target, arg, encryptionKey, metadataHash);
        } else if (action == Action.SuspendMember) {
            _transition(target, MemberStatus.Active, MemberStatus.Suspended);
            emit MemberSuspended(target);
        } else if (action == Action.ReinstateMember) {
            _transition(target, MemberStatus.Suspended, MemberStatus.Active);
            MemberSlot storage m = _members[target];
            uint16 number = m.number;
            uint16 custodied = _custodiedNumber(target, number);
            if (custodied != number) m.number = custodied;
            emit MemberReinstated(target);
        } else if (action == Action.RemoveMember) {
            MemberStatus status = _members[target].status;
            if (status != MemberStatus.Active && status != MemberStatus.Suspended) {
                revert MemberRegistryInvalidMemberStatus(target, status);
            }
            _members[target].status = MemberStatus.Removed;
            emit MemberRemoved(target);
        } else if (action == Action.ChangeRoles) {
            MemberSlot storage m = _existingMember(target);
            uint16 previous = m.roles;
            m.roles = arg;
            emit MemberRolesChanged(target, previous, arg);
        } else if (action == Action.RotateEncryptionKey) {
            _existingMember(target);
            _encryptionKeys[target] = encryptionKey;
            emit EncryptionKeyRotated(target, encryptionKey);
        } else if (action == Action.AddAdmin) {
            _addAdmin(target);
            _bumpEpoch();
        } else if (action == Action.RemoveAdmin) {
            _removeAdmin(target);
            _bumpEpoch();
        } else if (action == Action.TransferRecords) {
            _transferRecords(arg, target);
        } else {
            _setThreshold(uint8(arg));
            _bumpEpoch();
        }
    }

    function _addMember(address member, uint16 roles, bytes32 encryptionKey, bytes32 metadataHash) private {
        MemberSlot memory previous = _members[member];
        if (previous.status != MemberStatus.None && previous.status != MemberStatus.Removed) {
            revert MemberRegistryInvalidMemberStatus(member, previous.status);
        }
        uint16 number = _custodiedNumber(member, previous.number);
        _members[member] = MemberSlot(MemberStatus.Active, roles, uint40(block.timestamp), number);
        _encryptionKeys[member] = encryptionKey;
        _metadataHashes[member] = metadataHash;
        emit MemberAdded(member, roles, encryptionKey, metadataHash);
    }

    /// @dev The number `member` (coming into service) is to have: `number` if it is still the custodian of
    /// it, otherwise (a new member: 0, or its records were transferred) the next number, in its custody.
    function _custodiedNumber(address member, uint16 number) private returns (uint16) {
        if (number != 0) {
            if (_custodians[number] != member) return _nextNumber(member);
            return number;
        }
        return _nextNumber(member);
    }

    function _nextNumber(address member) private returns (uint16 number) {
        uint16 given = _gov.numbers;
        if (given == type(uint16).max) revert MemberRegistryTooManyMembers(type(uint16).max);
        number = given + 1;
        _gov.numbers = number;
        _custodians[number] = member;
    }

    /// @dev Hands the records of member number `number` to `successor`: only away from a custodian that is
    /// out of service (Suspended or Removed), only to an active gateway.
    function _transferRecords(uint16 number, address successor) private {
        address from = _custodians[number];
        if (from == address(0)) revert MemberRegistryUnknownNumber(number);
        MemberStatus status = _members[from].status;
        if (status != MemberStatus.Suspended && status != MemberStatus.Removed) {
            revert MemberRegistryInvalidMemberStatus(from, status);
        }
        MemberSlot memory s = _members[successor];
        // ROLE_GATEWAY is one bit; `!=` because slither's incorrect-equality flags `==` on a member slot
        if (s.status != MemberStatus.Active || s.roles & Vocabulary.ROLE_GATEWAY != Vocabulary.ROLE_GATEWAY) {
            revert MemberRegistryNotGateway(successor);
        }
        _custodians[number] = successor;
        emit RecordsTransferred(number, from, successor);
    }

    function _transition(address member, MemberStatus from, MemberStatus to) private {
        MemberStatus status = _members[member].status;
        if (status != from) revert MemberRegistryInvalidMemberStatus(member, status);
        _members[member].status = to;
    }

    function _existingMember(address member) private view returns (MemberSlot storage m) {
        m = _members[member];
        if (m.status != MemberStatus.Active && m.status != MemberStatus.Suspended) {
            revert MemberRegistryInvalidMemberStatus(member, m.status);
        }
    }

    function _addAdmin(address account) private {
        if (account == address(0)) revert MemberRegistryZeroAddress();
        if (_admins[account]) revert MemberRegistryAdminState(account, true);
        if (_gov.adminCount == type(uint8).max) revert MemberRegistryTooManyAdmins(type(uint8).max);
        _admins[account] = true;
        _gov.adminCount += 1;
        emit AdminAdded(account);
    }

    function _removeAdmin(address account) private {
        if (!_admins[account]) revert MemberRegistryAdminState(account, false);
        GovernanceSlot memory gov = _gov;
        if (gov.adminCount - 1 < gov.threshold) revert MemberRegistryAdminUnderflow(gov.adminCount - 1, gov.threshold);
        _admins[account] = false;
        _gov.adminCount = gov.adminCount - 1;
        emit AdminRemoved(account);
    }

    function _setThreshold(uint8 threshold) private {
        uint8 adminCount = _gov.adminCount;
        if (threshold == 0 || threshold > adminCount) revert MemberRegistryInvalidThreshold(threshold, adminCount);
        uint8 previous = _gov.threshold;
        _gov.threshold = threshold;
        emit ThresholdChanged(previous, threshold);
    }

    /// @dev A changed admin set or threshold invalidates every pending proposal (see the contract NatSpec).
    function _bumpEpoch() private {
        unchecked {
            // wrapping after 65,536 admin changes is harmless: proposals also expire after PROPOSAL_TTL
            _gov.adminEpoch += 1;
        }
    }
}
