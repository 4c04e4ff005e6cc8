// Event Grid subscriptions delivering to the Function App: BlobCreated under backups/ to the catalog
// ingest function, and "backup failed" events from the backup jobs' topic to the incident function.
// Both retry with a bounded policy and dead-letter to a container with the topic's own identity.
// Deployed after the app image is published (Event Grid checks that the function exists).
param systemTopicName string
param backupJobsTopicName string
param functionAppName string

@description('The backups storage account (home of the dead-letter container).')
param storageAccountName string

param backupContainer string = 'backups'
param deadLetterContainer string = 'eventgrid-deadletter'

@description('Name of the Event Grid-triggered function that catalogs a new backup.')
param blobCreatedFunctionName string = 'catalog_blob_created'

@description('Name of the Event Grid-triggered function that handles a failed backup job.')
param backupFailedFunctionName string = 'backup_failed'

@description('Event type the backup jobs publish on failure (continuity.incidents.rules.BACKUP_FAILED_EVENT_TYPE).')
param backupFailedEventType string = 'Continuity.Backup.Failed'

@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 10

@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource functionApp 'Microsoft.Web/sites@2023-12-01' existing = {
  name: functionAppName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' existing = {
  name: systemTopicName
}

resource backupJobs 'Microsoft.EventGrid/topics@2024-06-01-preview' existing = {
  name: backupJobsTopicName
}

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = {
  parent: systemTopic
  name: 'backup-blob-created'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/${blobCreatedFunctionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${backupContainer}/'
      enableAdvancedFilteringOnArrays: true
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainer
        }
      }
    }
  }
}

resource backupFailed 'Microsoft.EventGrid/topics/eventSubscriptions@2024-06-01-preview' = {
  parent: backupJobs
  name: 'backup-failed'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/${backupFailedFunctionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        backupFailedEventType
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainer
        }
      }
    }
  }
}

output blobCreatedSubscriptionId string = blobCreated.id
output backupFailedSubscriptionId string = backupFailed.id
