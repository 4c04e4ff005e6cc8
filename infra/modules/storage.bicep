// The backups storage account: backups, attachments and evidence containers, versioned, with
// version-level immutability (WORM) on backups and evidence, soft delete, and a lifecycle policy that
// tiers each service tier's backups at the ages of its retention policy (continuity/kernel/tenants.py).
// The lifecycle policy only moves tiers: deleting is the retention planner's job (plan, then apply),
// which honours legal holds and min_copies that a lifecycle rule cannot see.
param location string

@description('Storage account name (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param accountName string

// Geo-redundant so backups survive the primary region, and not zone-redundant: "The archive tier isn't
// supported for ZRS, GZRS, or RA-GZRS accounts" (Microsoft Learn, Access tiers for blob data), and every
// service tier archives (the lifecycle's tierToArchive below would silently never happen).
@description('Replication; geo-redundant so backups survive the primary region, archive-capable.')
@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
])
param skuName string = 'Standard_RAGRS'

@description('Container names; must equal the CONTINUITY_*_CONTAINER app settings.')
param backupContainer string = 'backups'
param attachmentContainer string = 'attachments'
param evidenceContainer string = 'evidence'
@description('The WAL archive and base backups of the servers we run ourselves (barman-cloud layout).')
param walContainer string = 'wal'
@description('Days after which WAL segments and base backups move to the cool tier (never colder: a rewind reads them at once).')
param walCoolAfterDays int = 7
@description('The product\'s own copy of every attachment file a tenant referenced (content-addressed, never rewritten).')
param attachmentKeepContainer string = 'attachments-kept'

@description('Container Event Grid dead-letters undeliverable BlobCreated events into.')
param deadLetterContainer string = 'eventgrid-deadletter'

@description('Default version-level retention of a new backup version, in days (the shortest tier immutable_days).')
@minValue(1)
param backupImmutableDays int = 7

@description('Default version-level retention of a new evidence version, in days.')
@minValue(1)
param evidenceImmutableDays int = 2555

@description('Soft delete window for blobs and containers, in days.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 30

// Storage REST, Create Or Update Immutability Policy: it "creates or updates an unlocked immutability policy",
// and is refused once the policy is locked. After the operator locks it (infra/README.md), set this true so
// redeploys leave the locked policies alone.
@description('True once the container immutability policies are locked: redeploys then do not PUT them.')
param immutabilityPolicyLocked bool = false

@description('One entry per service tier of config/tenants.yaml: name, coolAfterDays, coldAfterDays, archiveAfterDays, validateBeforeArchive.')
param retentionTiers array

@description('Shared key access. The blob adapter still connects with a connection string; turn this off once it uses the managed identity.')
param allowSharedKeyAccess bool = false

@description('Subnet of the Function App (service endpoint) allowed through the firewall.')
param functionsSubnetId string

param tags object = {}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: accountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: allowSharedKeyAccess
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // Event Grid (dead-letter) and the Functions platform come in as trusted services.
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      virtualNetworkRules: [
        {
          id: functionsSubnetId
          action: 'Allow'
        }
      ]
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    isVersioningEnabled: true
    changeFeed: {
      enabled: true
      retentionInDays: 90
    }
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
      allowPermanentDelete: false
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource backups 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: backupContainer
  properties: {
    publicAccess: 'None'
    immutableStorageWithVersioning: {
      enabled: true
    }
  }
}

// Unlocked at deploy: locking is irreversible, so an operator locks it after the first smoke test
// (infra/README.md). Per-version retention for longer tiers is set by the app on each backup.
resource backupsPolicy 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!immutabilityPolicyLocked) {
  parent: backups
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: backupImmutableDays
    allowProtectedAppendWrites: false
  }
}

resource attachments 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: attachmentContainer
  properties: {
    publicAccess: 'None'
  }
}

resource evidence 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: evidenceContainer
  properties: {
    publicAccess: 'None'
    immutableStorageWithVersioning: {
      enabled: true
    }
  }
}

resource evidencePolicy 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!immutabilityPolicyLocked) {
  parent: evidence
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: evidenceImmutableDays
    allowProtectedAppendWrites: false
  }
}

// WAL segments and base backups are written once and never rewritten: the same WORM guard as the dumps,
// so a compromised server cannot rewrite its own recovery history.
resource wal 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: walContainer
  properties: {
    publicAccess: 'None'
    immutableStorageWithVersioning: {
      enabled: true
    }
  }
}

resource walPolicy 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!immutabilityPolicyLocked) {
  parent: wal
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: backupImmutableDays
    allowProtectedAppendWrites: false
  }
}

resource attachmentKeep 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: attachmentKeepContainer
  properties: {
    publicAccess: 'None'
    immutableStorageWithVersioning: {
      enabled: true
    }
  }
}

resource deadLetter 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainer
  properties: {
    publicAccess: 'None'
  }
}

// Backups carry blob index tags `tier` (service tier) and `status`; a tier whose policy says
// validate_before_archive only archives backups whose status is `validated`.
var coolColdRules = [for tier in retentionTiers: {
  name: 'backups-${tier.name}-cool-cold'
  enabled: true
  type: 'Lifecycle'
  definition: {
    filters: {
      blobTypes: [
        'blockBlob'
      ]
      prefixMatch: [
        '${backupContainer}/'
      ]
      blobIndexMatch: [
        {
          name: 'tier'
          op: '=='
          value: tier.name
        }
      ]
    }
    actions: {
      baseBlob: {
        tierToCool: {
          daysAfterCreationGreaterThan: tier.coolAfterDays
        }
        tierToCold: {
          daysAfterCreationGreaterThan: tier.coldAfterDays
        }
      }
    }
  }
}]

var archiveRules = [for tier in retentionTiers: {
  name: 'backups-${tier.name}-archive'
  enabled: true
  type: 'Lifecycle'
  definition: {
    filters: {
      blobTypes: [
        'blockBlob'
      ]
      prefixMatch: [
        '${backupContainer}/'
      ]
      blobIndexMatch: concat([
        {
          name: 'tier'
          op: '=='
          value: tier.name
        }
      ], tier.validateBeforeArchive ? [
        {
          name: 'status'
          op: '=='
          value: 'validated'
        }
      ] : [])
    }
    actions: {
      baseBlob: {
        tierToArchive: {
          daysAfterCreationGreaterThan: tier.archiveAfterDays
        }
      }
    }
  }
}]

// The WAL archive moves to cool once the newest base backups no longer start from it, never colder: a rewind
// reads every segment since its base backup at once, and archive-tier blobs need hours of rehydration first.
var walRules = [
  {
    name: 'wal-cool'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${walContainer}/'
        ]
      }
      actions: {
        baseBlob: {
          tierToCool: {
            daysAfterCreationGreaterThan: walCoolAfterDays
          }
        }
      }
    }
  }
]

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: concat(coolColdRules, archiveRules, walRules)
    }
  }
}

output accountId string = account.id
output accountName string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output deadLetterContainer string = deadLetter.name
